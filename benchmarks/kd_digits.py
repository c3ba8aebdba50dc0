"""Scratch vs KD vs DKD vs DIST for a small student on scikit-learn digits, full and scarce labels.

Teacher: ``DigitsCNN(width=20)`` (~95k params) trained on all training labels. Student:
``DigitsMLP(hidden=16)`` (1.2k params). Every run goes through ``SingleTeacherDistill`` +
``ConfigurableDistiller`` (scratch = the same loop without a teacher). For each seed the split
(``load_digits_split(seed)``), the initialisation and the batch order change; all methods of one seed
share them. Test accuracy after the last epoch, mean +- std over seeds.

Settings:
* full: every training image labelled.
* scarce: 10% of the training labels (stratified); every training image is still seen, unlabelled
  ones (target -100) only through the distillation loss. DKD needs a class per sample: unlabelled
  images get the teacher's argmax as ``gt_labels`` (passed with ``algo.loss(..., gt_labels=...)`` and
  mapped with ``{"from_data": "gt_labels"}``).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kd_digits.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torchpare.datasets import DigitsSplit, load_digits_split
from torchpare.distill.algorithms import SingleTeacherDistill, default_student_loss
from torchpare.zoo import DigitsCNN, DigitsMLP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _distill_report import write_section  # noqa: E402

KD_WEIGHT = 0.9  # Hinton: (1 - alpha) * CE + alpha * tau^2 * KL, alpha = 0.9, tau = 4


def logits_mapping(extra: dict | None = None) -> dict:
    return {
        "preds_S": {"from_student": True, "recorder": "logits"},
        "preds_T": {"from_student": False, "recorder": "logits"},
        **(extra or {}),
    }


def distiller(loss_cfg: dict, extra_mapping: dict | None = None) -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kd": loss_cfg},
        "loss_forward_mappings": {"kd": logits_mapping(extra_mapping)},
    }


METHODS = {
    # name: (distiller config or None, weight of the supervised CE)
    "scratch": (None, 1.0),
    "KD (tau=4, alpha=0.9)": (
        distiller({"type": "KLDivergence", "tau": 4, "loss_weight": KD_WEIGHT}),
        1 - KD_WEIGHT,
    ),
    "DKD (alpha=1, beta=8, tau=4)": (
        distiller(
            {"type": "DKDLoss", "tau": 4, "alpha": 1.0, "beta": 8.0},
            {"gt_labels": {"from_data": "gt_labels"}},
        ),
        1.0,
    ),
    "DIST (beta=1, gamma=1, tau=1)": (
        distiller({"type": "DISTLoss", "beta": 1.0, "gamma": 1.0, "tau": 1.0}),
        1.0,
    ),
}


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (model.eval()(x).argmax(1) == y).float().mean().item()


def train_teacher(split: DigitsSplit, seed: int, epochs: int) -> DigitsCNN:
    torch.manual_seed(seed)
    teacher = DigitsCNN(width=20)
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    n = len(split.y_train)
    for _ in range(epochs):
        teacher.train()
        for idx in torch.randperm(n, generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(teacher(split.x_train[idx]), split.y_train[idx]).backward()
            opt.step()
        sched.step()
    return teacher.eval()


def scarce_targets(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Keep ``fraction`` of the labels per class (at least one), the rest become -100."""
    gen = torch.Generator().manual_seed(seed + 1000)
    out = torch.full_like(y, -100)
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        keep = idx[torch.randperm(len(idx), generator=gen)[: max(1, round(fraction * len(idx)))]]
        out[keep] = y[keep]
    return out


def train_student(
    split: DigitsSplit,
    teacher: DigitsCNN,
    method: str,
    targets: torch.Tensor,
    seed: int,
    epochs: int,
) -> float:
    cfg, ce_weight = METHODS[method]
    torch.manual_seed(seed)
    student = DigitsMLP(hidden=16)

    def student_loss(outputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ce_weight * default_student_loss(outputs, t)

    algo = None
    if cfg is not None:
        algo = SingleTeacherDistill(student, teacher, cfg, student_loss=student_loss)
        params = list(algo.trainable_parameters())
    else:
        params = list(student.parameters())
    # DKD's gt_labels: the true label where known, else the teacher's prediction
    with torch.no_grad():
        pseudo = torch.where(targets >= 0, targets, teacher(split.x_train).argmax(1))
    opt = torch.optim.Adam(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    n = len(targets)
    for _ in range(epochs):
        student.train()
        if algo is not None:
            algo.train()
        for idx in torch.randperm(n, generator=gen).split(64):
            x, t = split.x_train[idx], targets[idx]
            opt.zero_grad()
            if algo is None:
                loss = student_loss(student(x), t)
            else:
                loss = algo.total_loss(algo.loss(x, t, gt_labels=pseudo[idx]))
            loss.backward()
            opt.step()
        sched.step()
    return accuracy(student, split.x_test, split.y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/benchmarks/distill.md", help="markdown file ('' to skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results: dict[tuple[str, str], list[float]] = {}
    teacher_acc: list[float] = []
    for seed in range(args.seeds):
        split = load_digits_split(seed=seed)
        teacher = train_teacher(split, seed, args.teacher_epochs)
        teacher_acc.append(accuracy(teacher, split.x_test, split.y_test))
        settings = {
            "full labels": split.y_train,
            f"{args.label_fraction:.0%} labels": scarce_targets(split.y_train, args.label_fraction, seed),
        }
        for setting, targets in settings.items():
            for method in METHODS:
                acc = train_student(split, teacher, method, targets, seed, args.epochs)
                results.setdefault((setting, method), []).append(acc)
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    elapsed = time.perf_counter() - start

    def fmt(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} +- {std:.2f}"

    lines = [
        "| setting | method | test accuracy % |",
        "|---|---|---|",
        f"| teacher DigitsCNN(20), all labels | - | {fmt(teacher_acc)} |",
    ]
    scratch = {s: statistics.mean(results[(s, "scratch")]) for s, _ in results}
    for (setting, method), values in results.items():
        delta = "" if method == "scratch" else f" ({statistics.mean(values) - scratch[setting]:+.2f})"
        lines.append(f"| {setting} | {method} | {fmt(values)}{delta} |")
    table = "\n".join(lines)
    print(table)
    print(f"total {elapsed:.0f} s on {args.threads} thread(s)")
    if args.out:
        body = (
            "## KD on scikit-learn digits: scratch vs KD vs DKD vs DIST (`benchmarks/kd_digits.py`)\n\n"
            f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kd_digits.py` "
            f"({args.seeds} seeds, student {args.epochs} epochs, teacher {args.teacher_epochs} epochs; "
            f"{elapsed:.0f} s on {args.threads} thread(s), torch {torch.__version__}).\n\n"
            "Student DigitsMLP(16) (1.2k params); mean +- std of test accuracy over seeds (split, init "
            "and batch order change with the seed); in brackets the difference to scratch. In the scarce "
            "setting the unlabelled images are seen only through the distillation loss; DKD uses the "
            "teacher's argmax as `gt_labels` there. The runtime depends on machine load (it was "
            "measured on a shared machine).\n\n" + table + "\n"
        )
        write_section(args.out, "kd_digits", body)


if __name__ == "__main__":
    main()
