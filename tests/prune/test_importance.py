"""Importance criteria: one shared group reduction, each criterion scoring member slices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchpare.prune as tp
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.importance import (
    BNScaleImportance,
    GroupFisherImportance,
    L1Importance,
    L2Importance,
    RandomImportance,
    TaylorImportance,
    build_importance,
    sum_units,
)
from torchpare.registry import IMPORTANCES, UnknownTypeError
from torchpare.zoo.catalog import build_zoo_model


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    return net, torch.randn(6, 4), torch.randint(0, 3, (6,))


def _hidden_group(net, x):
    (group,) = DependencyGraph.build(net, x).groups()
    return group


def test_l1_scores_sum_producer_rows_and_consumer_columns():
    net, x, _ = _mlp()
    group = _hidden_group(net, x)
    out = net[0].weight.abs().sum(1)
    cols = net[2].weight.abs().sum(0)
    torch.testing.assert_close(L1Importance(normalize=None, members="out")(net, group), out)
    torch.testing.assert_close(L1Importance(normalize=None, reduction="sum")(net, group), out + cols)
    torch.testing.assert_close(
        L1Importance(normalize=None, reduction="max")(net, group), torch.maximum(out, cols)
    )
    torch.testing.assert_close(L1Importance(normalize=None)(net, group), (out + cols) / 2)


def test_l2_and_normalisation():
    net, x, _ = _mlp()
    group = _hidden_group(net, x)
    expected = net[0].weight.pow(2).sum(1)
    scores = L2Importance(normalize="mean", members="out")(net, group)
    torch.testing.assert_close(scores, expected / expected.mean())


def test_bn_scale_ranks_by_batchnorm_gamma():
    torch.manual_seed(0)
    model, x = build_zoo_model("digits_cnn")
    graph = DependencyGraph.build(model, x)
    group = next(g for g in graph.groups() if "stem.bn" in g.module_names())
    gamma = torch.linspace(-1.0, 2.0, group.size)
    model.get_submodule("stem.bn").weight.data.copy_(gamma)
    torch.testing.assert_close(BNScaleImportance(normalize=None)(model, group), gamma.abs())


def test_bn_scale_gives_none_for_groups_without_a_norm_layer():
    net, x, _ = _mlp()
    assert BNScaleImportance()(net, _hidden_group(net, x)) is None


def test_taylor_needs_data_and_restores_model_state():
    net, x, y = _mlp()
    group = _hidden_group(net, x)
    imp = TaylorImportance(normalize=None, members="out")
    with pytest.raises(ValueError, match="prepare"):
        imp(net, group)
    net.train()
    imp.prepare(net, [(x, y)], loss_fn=F.cross_entropy)
    assert net.training and all(p.grad is None for p in net.parameters())
    net.zero_grad()
    F.cross_entropy(net.eval()(x), y).backward()
    expected = (net[0].weight * net[0].weight.grad).sum(1).abs()
    torch.testing.assert_close(imp(net, group), expected.detach())


def test_group_fisher_equals_per_sample_mask_gradients_squared():
    net, x, y = _mlp()
    graph = DependencyGraph.build(net, x)
    imp = GroupFisherImportance(normalize=None)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    imp.prepare(
        net, batches, batch_loss=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="sum"), graph=graph
    )
    expected = torch.zeros(5)
    for i in range(len(x)):
        mask = torch.ones(5, requires_grad=True)
        hidden = torch.tanh(net[0](x[i : i + 1])) * mask
        loss = F.cross_entropy(net[2](hidden), y[i : i + 1], reduction="sum")
        (g,) = torch.autograd.grad(loss, mask)
        expected += g.pow(2) / 2
    torch.testing.assert_close(imp(net, graph.groups()[0]), expected, rtol=1e-4, atol=1e-7)


def test_random_importance_is_reproducible_with_a_seed():
    net, x, _ = _mlp()
    group = _hidden_group(net, x)
    assert torch.equal(RandomImportance(seed=1)(net, group), RandomImportance(seed=1)(net, group))


def test_every_criterion_is_registered_and_reachable_from_the_package():
    for alias, cls in [
        ("l1", L1Importance),
        ("l2", L2Importance),
        ("bn_scale", BNScaleImportance),
        ("taylor", TaylorImportance),
        ("fisher", GroupFisherImportance),
        ("random", RandomImportance),
    ]:
        assert IMPORTANCES.get(alias) is cls
        assert getattr(tp, cls.__name__) is cls
    assert isinstance(build_importance({"type": "L1", "reduction": "max"}), L1Importance)


def test_unknown_criterion_and_bad_reduction_raise_clear_errors():
    with pytest.raises(UnknownTypeError, match="'taylr'.*did you mean 'taylor'"):
        build_importance("taylr")
    with pytest.raises(ValueError, match="reduction='median'"):
        L1Importance(reduction="median")


def test_data_dependent_criteria_reject_missing_data():
    net, x, _ = _mlp()
    with pytest.raises(ValueError, match="calibration data"):
        TaylorImportance().prepare(net, None)


def test_fisher_hooks_and_model_state_are_restored_when_the_loss_raises():
    net, x, y = _mlp()
    graph = DependencyGraph.build(net, x)
    net.train()

    def failing(model, batch):
        model(batch[0])
        raise RuntimeError("loss exploded")

    with pytest.raises(RuntimeError, match="loss exploded"):
        GroupFisherImportance().prepare(net, [(x, y)], batch_loss=failing, graph=graph)
    assert net.training
    assert not any(m._forward_pre_hooks for m in net.modules())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())



@pytest.mark.parametrize("name", ["densenet", "mobilenetv2", "grouped_conv", "resnet"])
def test_each_member_is_summed_over_its_own_index_map(name):
    # Concatenations shift a unit's index differently at each member: every member must be gathered
    # with its own index map (checked against a per-unit loop).
    torch.manual_seed(0)
    model, x = build_zoo_model(name)
    checked = 0
    for group in DependencyGraph.build(model, x).groups():
        for member in group.members:
            tensor = getattr(model.get_submodule(member.module_name), member.param_name, None)
            if not isinstance(tensor, torch.Tensor) or member.param_name == "num_batches_tracked":
                continue
            values = tensor.detach().abs()
            expected = torch.stack([values.index_select(member.dim, torch.tensor(idx)).sum()
                                    for idx in member.index_map])
            got = sum_units(L1Importance().member_scores(member, tensor), member.index_map, 0)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > 10
