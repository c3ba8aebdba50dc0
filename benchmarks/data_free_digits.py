"""Data-free distillation on scikit-learn digits: DAFL and DFAD vs KD on pure noise, no real training image.

Per seed: the split (``load_digits_split(seed)``) and the teacher ``DigitsCNN(width=16)``, trained
normally on the real training images with labels. Then each student ``DigitsSmallCNN(width=8)``
starts from the same initialisation and sees **no real image**, only ``steps x batch`` inputs:

* ``noise-kd``: ``SingleTeacherDistill`` (KL, tau 4) on uniform noise images in ``[0, 1]``;
* ``dafl``: :class:`~torchpare.distill.algorithms.DAFLDataFreeDistill` (generator trained from the
  teacher by the one-hot, activation and entropy losses; student KD on the generated images);
* ``dafl+bn``: the same plus DeepInversion's batch-norm statistics prior (``bn_weight=1``: the
  generated images' per-channel mean/variance at every teacher BatchNorm match its running ones);
* ``dfad``: :class:`~torchpare.distill.algorithms.AdversarialDataFreeDistill` (the generator maximises
  the student-teacher L1 logit gap the student minimises).

Every method gets the same number of steps and inputs per step (one Adam optimiser over student and
generator). Test accuracy on the real test images after the last step, mean +- std over seeds.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_free_digits.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.distill.algorithms import AdversarialDataFreeDistill, DAFLDataFreeDistill, SingleTeacherDistill
from torchpare.engine.trainer import evaluate
from torchpare.zoo import DigitsCNN, DigitsSmallCNN


def kl_distiller(loss: dict | None = None, args: tuple[str, str] = ("preds_S", "preds_T")) -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kd": loss or {"type": "KLDivergence", "tau": 4}},
        "loss_forward_mappings": {"kd": {
            args[0]: {"from_student": True, "recorder": "logits"},
            args[1]: {"from_student": False, "recorder": "logits"}}},
    }


GENERATOR = {"type": "DAFLGenerator", "img_size": 8, "latent_dim": 64, "hidden_channels": 64}


def train_teacher(split, seed: int, epochs: int = 30) -> DigitsCNN:
    torch.manual_seed(seed)
    teacher = DigitsCNN(width=16)
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    n = len(split.y_train)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(64):
            loss = F.cross_entropy(teacher(split.x_train[idx]), split.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return teacher.eval()


def run(method: str, teacher: DigitsCNN, seed: int, steps: int, batch: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(1000 + seed)
    student = DigitsSmallCNN(width=8)
    if method == "noise-kd":
        algo = SingleTeacherDistill(student, teacher, kl_distiller(), calculate_student_loss=False)
    elif method == "dafl":
        algo = DAFLDataFreeDistill(student, teacher, GENERATOR, kl_distiller(), batch_size=batch)
    elif method == "dafl+bn":
        algo = DAFLDataFreeDistill(student, teacher, GENERATOR, kl_distiller(), batch_size=batch, bn_weight=1.0)
    else:
        algo = AdversarialDataFreeDistill(student, teacher, GENERATOR, kl_distiller({"type": "L1Loss"}, ("s_feature", "t_feature")),
                                          batch_size=batch)
    opt = torch.optim.Adam(algo.trainable_parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    algo.train()
    for _ in range(steps):
        noise = torch.rand(batch, 1, 8, 8, generator=gen) if method == "noise-kd" else None
        loss = algo.total_loss(algo.loss(noise))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return student.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--methods", nargs="+", default=["noise-kd", "dafl", "dafl+bn", "dfad"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    acc: dict[str, list[float]] = {"teacher": [], **{m: [] for m in args.methods}}
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        split = load_digits_split(seed)
        test = TensorDataset(split.x_test, split.y_test)
        teacher = train_teacher(split, seed)
        acc["teacher"].append(evaluate(teacher, test)["accuracy"])
        for m in args.methods:
            t0 = time.perf_counter()
            student = run(m, teacher, seed, args.steps, args.batch, args.lr)
            times[m].append(time.perf_counter() - t0)
            acc[m].append(evaluate(student, test)["accuracy"])
            print(f"seed {seed} {m}: {acc[m][-1]:.4f} ({times[m][-1]:.0f}s)", flush=True)
    print(f"\nsteps={args.steps} batch={args.batch} lr={args.lr} seeds={args.seeds}")
    print("| method | real training images seen | test accuracy (mean +- std) | per seed |")
    print("|---|---|---|---|")
    for m, values in acc.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        seen = "all (labelled)" if m == "teacher" else "0"
        per = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {m} | {seen} | {100 * statistics.mean(values):.1f} +- {100 * std:.1f} % | {per} |")


if __name__ == "__main__":
    main()
