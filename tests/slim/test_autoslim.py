"""AutoSlim supernet training: sandwich rule, in-place distillation, BN per width, exact resume."""

import pytest
import torch
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.registry import ALGORITHMS
from torchpare.slim import AutoSlim, SwitchableBatchNorm2d
from torchpare.zoo import DigitsCNN

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    split = load_digits_split(0)
    return split


def _algo(**kw):
    kw.setdefault("pruner", {"ratios": [0.25, 0.5, 1.0]})
    return AutoSlim(DigitsCNN(width=8), example_inputs=X, **kw)


def test_sandwich_step_returns_every_subnet_loss_and_one_step_trains_all(digits):
    algo = _algo(num_random_samples=3)
    x, y = digits.x_train[:32], digits.y_train[:32]
    losses = algo.loss(x, y)
    assert sorted(losses) == ["distill.min", "distill.random0", "distill.random1", "distill.random2",
                              "student.loss"]
    algo.total_loss(losses).backward()
    # the max subnet's loss reaches every parameter; the min subnet's only the leading channels
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in algo.parameters())
    assert not algo.pruner._masker.active  # back at the max subnet


def test_supernet_training_teaches_every_listed_width_on_digits(digits):
    train = TensorDataset(digits.x_train, digits.y_train)
    test = TensorDataset(digits.x_test, digits.y_test)
    algo = _algo(num_random_samples=0, pruner={"ratios": [0.5, 1.0]})
    Trainer(algo, train, config=TrainConfig(epochs=2, batch_size=64, lr=0.02, seed=0, quiet=True)).fit()
    for ratio in (0.5, 1.0):
        with algo.subnet(ratio) as net:  # switchable BN: each listed width has its own statistics
            assert evaluate(net, test)["accuracy"] > 0.7, ratio  # chance: 0.1


def test_in_place_distillation_learns_from_the_detached_max_outputs(digits):
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, preds_S, preds_T):
            seen.append((preds_S.requires_grad, preds_T.requires_grad, preds_T.clone()))
            return (preds_S - preds_T).pow(2).mean()

    algo = _algo(distill_loss=Probe(), num_random_samples=1).eval()
    x = digits.x_train[:16]
    algo.loss(x, digits.y_train[:16])
    with torch.no_grad():
        max_logits = algo.student(x)
    assert len(seen) == 2  # min + one random subnet
    for student_grad, teacher_grad, teacher in seen:
        assert student_grad and not teacher_grad
        torch.testing.assert_close(teacher, max_logits)


def test_distill_losses_do_not_train_the_max_subnet_through_its_outputs(digits):
    algo = _algo(num_random_samples=0)
    x = digits.x_train[:16]
    losses = algo.loss(x, None)  # unlabelled: only the min subnet's distillation loss
    assert sorted(losses) == ["distill.min"]
    losses["distill.min"].backward()
    # channels outside the min subnet receive no gradient: the teacher side was detached
    conv = algo.student.layer3.conv.weight.grad
    kept = algo.pruner.ratio_subnet(0.25)[algo.pruner.get_space_id("layer3.conv")]
    assert bool(conv[~kept].abs().sum() == 0) and bool(conv[kept].abs().sum() > 0)


def test_switchable_bn_keeps_one_statistics_set_per_width(digits):
    algo = _algo(num_random_samples=0)
    bns = [m for m in algo.student.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert len(bns) == 4 and bns[0].widths == (0.25, 0.5, 1.0)
    algo.loss(digits.x_train[:32] * 3.0, digits.y_train[:32])
    bn = algo.student.layer1.bn
    stats = bn.stat_means
    assert not torch.equal(stats[0], stats[2]) and torch.equal(stats[1], torch.zeros_like(stats[1]))
    assert torch.equal(bn.running_mean, stats[2])  # the max width is active after a step


def test_resume_is_exact_including_the_subnet_sampling(tmp_path, digits):
    train = TensorDataset(digits.x_train[:256], digits.y_train[:256])
    cfg = dict(epochs=2, batch_size=64, lr=0.01, seed=3, quiet=True, checkpoint_every=1)

    def build():
        torch.manual_seed(0)
        return _algo(num_random_samples=2, bn="recalibrate", seed=5)

    ref = build()
    Trainer(ref, train, config=TrainConfig(**cfg)).fit()

    class Crash(Exception):
        pass

    def crash(trainer, record):
        if record["step"] == 5:
            raise Crash

    first = build()
    with pytest.raises(Crash):
        Trainer(first, train, config=TrainConfig(**cfg), run_dir=tmp_path, callbacks=[crash]).fit()
    resumed = build()
    Trainer(resumed, train, config=TrainConfig(**cfg), run_dir=tmp_path).fit(resume=True)
    a, b = ref.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(ref._generator.get_state(), resumed._generator.get_state())


def test_recalibrate_mode_samples_per_space_widths_and_needs_calibration(digits):
    algo = _algo(bn="recalibrate", num_random_samples=4, seed=1)
    widths = {tuple(int(m.sum()) for m in s.values()) for _, s, _ in algo.sample_subnets()[2:]}
    assert any(len(set(w)) > 1 for w in widths)  # not uniform
    with pytest.raises(ValueError, match="calib_data"), algo.subnet(0.5):
        pass
    with algo.subnet(0.5, [digits.x_train[:64]]) as net:
        net.eval()(digits.x_train[:2])


def test_autoslim_builds_from_a_config_dict():
    algo = ALGORITHMS.build({
        "type": "AutoSlim", "model": {"type": "DigitsCNN", "width": 4}, "input_shape": [1, 1, 8, 8],
        "pruner": {"ratios": [0.5, 1.0], "divisor": 2}, "distill_loss": {"type": "KLDivergence", "tau": 2.0},
    })
    assert algo.pruner.divisor == 2 and algo.distill_loss.tau == 2.0


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_random_samples"):
        _algo(num_random_samples=-1)
    with pytest.raises(ValueError, match="bn must be"):
        _algo(bn="frozen")
    with pytest.raises(ValueError, match="input_shape"):
        AutoSlim(DigitsCNN(width=4))


def test_sliced_subnet_forward_equals_the_masked_one_with_the_same_gradients(digits):
    x, y = digits.x_train[:16], digits.y_train[:16]
    sliced = _algo(bn="recalibrate", seed=2)
    masked = _algo(bn="recalibrate", seed=2, subnet_forward="mask")
    masked.load_state_dict(sliced.state_dict())
    assert sliced._sliced is not None and masked._sliced is None
    ls, lm = sliced.loss(x, y), masked.loss(x, y)
    for k in ls:
        torch.testing.assert_close(ls[k], lm[k], atol=1e-5, rtol=1e-5)
    sliced.total_loss(ls).backward()
    masked.total_loss(lm).backward()
    for (name, a), b in zip(sliced.named_parameters(), masked.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    for k, v in sliced.state_dict().items():  # running statistics too
        torch.testing.assert_close(v, masked.state_dict()[k], atol=1e-5, rtol=1e-5, msg=k)


def test_slicing_that_differs_from_masking_falls_back_to_masks_with_a_warning():
    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.dw(self.conv(x)).mean((2, 3)))

    with pytest.warns(UserWarning, match="masks at full width"):
        algo = AutoSlim(Grouped(), {"ratios": [0.5, 1.0]}, example_inputs=X, bn="recalibrate")
    assert algo._sliced is None
    algo.total_loss(algo.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))).backward()

