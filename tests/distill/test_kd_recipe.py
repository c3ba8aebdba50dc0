"""The KD recipe on scikit-learn digits: CNN teacher -> small CNN student, logits from ``fc``, KL(tau=4).

The accuracy comparison against a student trained without a teacher lives in
``benchmarks/kd_digits.py`` (5 seeds); here we check the recipe trains and is deterministic.
"""

from __future__ import annotations

import pytest
import torch

from torchpare.datasets import digits_loaders, load_digits_split
from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.zoo import DigitsCNN, DigitsSmallCNN

KD_DISTILLER = {
    "student_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc"}},
    "teacher_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc"}},
    "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4, "loss_weight": 0.9}},
    "loss_forward_mappings": {
        "kl": {
            "preds_S": {"from_student": True, "recorder": "fc"},
            "preds_T": {"from_student": False, "recorder": "fc"},
        }
    },
}


@pytest.fixture(scope="module")
def split():
    return load_digits_split(seed=0)


@pytest.fixture(scope="module")
def teacher(split):
    torch.manual_seed(0)
    model = DigitsCNN(width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, _, _ = digits_loaders(split, batch_size=64, seed=0)
    model.train()
    for _ in range(4):
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def accuracy(model, x, y):
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


def distil(split, teacher, seed, epochs=3):
    """Train a fresh student with KD; return per-epoch mean distill losses and the student."""
    torch.manual_seed(seed)
    student = DigitsSmallCNN(width=4)
    algo = SingleTeacherDistill(student, teacher, KD_DISTILLER)
    opt = torch.optim.Adam(algo.trainable_parameters(), lr=1e-2)
    train, _, _ = digits_loaders(split, batch_size=64, seed=seed)
    algo.train()
    per_epoch = []
    for _ in range(epochs):
        kd = []
        for x, y in train:
            opt.zero_grad()
            losses = algo.loss(x, y)
            algo.total_loss(losses).backward()
            opt.step()
            kd.append(losses["distill.loss_kl"].item())
        per_epoch.append(sum(kd) / len(kd))
    return per_epoch, student


def test_teacher_is_accurate_enough_to_teach(split, teacher):
    assert accuracy(teacher, split.x_test, split.y_test) > 0.85


def test_kd_distill_loss_decreases_and_student_learns(split, teacher):
    per_epoch, student = distil(split, teacher, seed=1, epochs=6)
    assert per_epoch[-1] < 0.6 * per_epoch[0], per_epoch
    assert accuracy(student, split.x_test, split.y_test) > 0.5


def test_kd_run_is_deterministic_for_a_seed(split, teacher):
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    losses_a, student_a = distil(split, teacher, seed=3, epochs=1)
    losses_b, student_b = distil(split, teacher, seed=3, epochs=1)
    assert losses_a == losses_b
    for (ka, va), (kb, vb) in zip(student_a.state_dict().items(), student_b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    # and the teacher was not touched by either run
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())


@pytest.mark.slow
def test_kd_beats_scratch_with_scarce_labels_one_seed():
    """The benchmark's headline in one seed (~30 s): with 10% labels, KD on all images helps a lot."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kd_digits.py"
    spec = importlib.util.spec_from_file_location("kd_digits_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    split = load_digits_split(seed=0)
    teacher = bench.train_teacher(split, seed=0, epochs=20)
    targets = bench.scarce_targets(split.y_train, 0.1, seed=0)
    scratch = bench.train_student(split, teacher, "scratch", targets, seed=0, epochs=40)
    kd = bench.train_student(split, teacher, "KD (tau=4, alpha=0.9)", targets, seed=0, epochs=40)
    assert kd > scratch + 3.0, (scratch, kd)
