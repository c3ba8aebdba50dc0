"""Switchable BatchNorm for 1d and 3d inputs: conversion, per-width statistics, deployment."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.slim import (
    AutoSlim,
    SwitchableBatchNorm,
    SwitchableBatchNorm1d,
    SwitchableBatchNorm2d,
    SwitchableBatchNorm3d,
    convert_switchable_bn,
    to_plain_bn,
)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def trained_mlp():
    """An MLP with BatchNorm1d trained on digits with the sandwich rule and switchable BatchNorm."""
    split = load_digits_split(0)
    algo = AutoSlim(_mlp(), {"ratios": [0.5, 1.0]}, example_inputs=torch.zeros(2, 1, 8, 8),
                    num_random_samples=1, bn="switchable", seed=0)
    train = TensorDataset(split.x_train, split.y_train)
    Trainer(algo, train, config=TrainConfig(epochs=3, batch_size=64, lr=0.01, seed=0, quiet=True)).fit()
    return algo, split


def test_batchnorm1d_becomes_switchable_under_the_sandwich_rule(trained_mlp):
    algo, _ = trained_mlp
    bns = [m for m in algo.student.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 2 and all(type(m) is SwitchableBatchNorm1d for m in bns)
    for bn in bns:
        assert bn.widths == (0.5, 1.0)
        assert bool(bn.stat_counts.min() > 0)  # both widths trained their own statistics
        # the max width is active after training; the 0.5 width's statistics differ from it
        torch.testing.assert_close(bn.running_mean, bn.stat_means[1])
        assert not torch.allclose(bn.stat_means[0][:16], bn.stat_means[1][:16])


def test_each_width_is_evaluated_with_its_own_statistics(trained_mlp):
    algo, split = trained_mlp
    test = TensorDataset(split.x_test, split.y_test)
    bn = algo.student[2]
    for ratio, slot in ((0.5, 0), (1.0, 1)):
        with algo.subnet(ratio) as net:
            torch.testing.assert_close(bn.running_mean, bn.stat_means[slot])
            torch.testing.assert_close(bn.running_var, bn.stat_vars[slot])
            assert evaluate(net, test)["accuracy"] > 0.8, ratio  # chance: 0.1
    assert bn.active == 1  # back at the max width


def test_evaluating_a_width_leaves_every_width_statistics_as_they_were():
    # Bug: the context restored the max width's statistics while the narrow width was still active,
    # so they were stored as the narrow width's: a second evaluation of 0.5 used the max width's.
    algo = AutoSlim(_mlp(), {"ratios": [0.5, 1.0]}, example_inputs=torch.zeros(2, 1, 8, 8),
                    num_random_samples=0, bn="switchable")
    torch.manual_seed(1)
    algo.loss(torch.rand(32, 1, 8, 8) * 3, torch.randint(0, 10, (32,)))  # each width's own statistics
    bn = algo.student[5]
    before = (bn.stat_means.clone(), bn.stat_vars.clone(), bn.running_mean.clone())
    assert not torch.allclose(before[0][0], before[2])
    for _ in range(2):
        with algo.subnet(0.5):
            torch.testing.assert_close(bn.running_mean, before[0][0])
        algo.deploy(0.5)
    torch.testing.assert_close(bn.stat_means[0], before[0][0])
    torch.testing.assert_close(bn.stat_vars[0], before[1][0])
    torch.testing.assert_close(bn.running_mean, before[2])


def test_deployed_mlp_equals_the_masked_supernet(trained_mlp):
    algo, split = trained_mlp
    x = split.x_test
    for ratio in (0.5, 1.0):
        small = algo.deploy(ratio).eval()
        with algo.subnet(ratio) as net, torch.no_grad():
            want = net.eval()(x)
        with torch.no_grad():
            got = small(x)
        assert (got - want).abs().max() <= 1e-5, ratio
        bns = [m for m in small.modules() if isinstance(m, nn.BatchNorm1d)]
        assert all(type(m) is nn.BatchNorm1d for m in bns)
        assert [m.num_features for m in bns] == [round(32 * ratio)] * 2


def test_batchnorm3d_supernet_trains_and_deploys_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3),
    )
    algo = AutoSlim(net, {"ratios": [0.5, 1.0]}, example_inputs=torch.zeros(2, 1, 4, 4, 4),
                    num_random_samples=0, bn="switchable")
    assert sum(type(m) is SwitchableBatchNorm3d for m in algo.student.modules()) == 2
    opt = torch.optim.SGD(algo.parameters(), lr=0.05)
    x, y = torch.randn(16, 1, 4, 4, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        algo.total_loss(algo.loss(x, y)).backward()
        opt.step()
    bn = algo.student[4]  # the first one sees the image at every width: its statistics agree
    assert not torch.allclose(bn.stat_means[0][:4], bn.stat_means[1][:4])
    small = algo.deploy(0.5).eval()
    with algo.subnet(0.5) as masked, torch.no_grad():
        want = masked.eval()(x)
    with torch.no_grad():
        assert (small(x) - want).abs().max() <= 1e-5
    assert [type(m) for m in small.modules() if isinstance(m, nn.BatchNorm3d)] == [nn.BatchNorm3d] * 2


@pytest.mark.parametrize(
    ("plain", "switchable", "shape"),
    [(nn.BatchNorm1d, SwitchableBatchNorm1d, (4, 3)), (nn.BatchNorm1d, SwitchableBatchNorm1d, (4, 3, 5)),
     (nn.BatchNorm2d, SwitchableBatchNorm2d, (4, 3, 2, 2)), (nn.BatchNorm3d, SwitchableBatchNorm3d, (4, 3, 2, 2, 2))],
)
def test_convert_and_back_keeps_parameters_statistics_and_outputs(plain, switchable, shape):
    torch.manual_seed(0)
    net = nn.Sequential(plain(3))
    net.train()(torch.randn(shape) * 2 + 1)  # non-trivial running statistics
    with torch.no_grad():
        net[0].weight.uniform_(0.5, 1.5)
    x = torch.randn(shape)
    want = net.eval()(x)
    assert convert_switchable_bn(net, (0.5, 1.0)) == ["0"]
    assert type(net[0]) is switchable and isinstance(net[0], SwitchableBatchNorm)
    torch.testing.assert_close(net(x), want)
    to_plain_bn(net)
    assert type(net[0]) is plain
    torch.testing.assert_close(net(x), want)


def test_a_switchable_bn_checks_its_input_rank():
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        SwitchableBatchNorm1d(3, widths=(1.0,))(torch.randn(2, 3, 2, 2))


def test_the_base_class_is_not_built_directly():
    with pytest.raises(TypeError, match="SwitchableBatchNorm1d, 2d or 3d"):
        SwitchableBatchNorm(3, widths=(1.0,))


def test_batchnorm_classes_that_cannot_switch_are_named_in_a_warning():
    class MyNorm(nn.BatchNorm2d):
        pass

    net = nn.Sequential(nn.Conv2d(1, 2, 3), MyNorm(2), nn.BatchNorm2d(2))
    with pytest.warns(UserWarning, match=r"1 \(MyNorm\) not made switchable"):
        assert convert_switchable_bn(net, (0.5, 1.0)) == ["2"]
    assert type(net[1]) is MyNorm
