"""Overhead of SingleTeacherDistill + ConfigurableDistiller over a hand-written KD training step.

Both steps do the same work: teacher forward under ``no_grad``, student forward, cross-entropy +
``KLDivergence(tau=4)`` on the logits, backward, SGD step, with identical model copies. The two are
interleaved in one process (hand, algo, hand, algo, ...) so machine noise hits both alike; the
reported figure is the median of the per-pair time ratios ``algo / hand``. Target: <= 1.05.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_overhead.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.losses.kl_divergence import kl_divergence
from torchpare.zoo import DigitsCNN, DigitsMLP, DigitsSmallCNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _distill_report import write_section  # noqa: E402

TAU = 4.0


def kd_config(student_logits: str) -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": student_logits}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": TAU}},
        "loss_forward_mappings": {
            "kl": {
                "preds_S": {"from_student": True, "recorder": "logits"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
    }


def hand_step(student: nn.Module, teacher: nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    with torch.no_grad():
        t_logits = teacher(x)
    s_logits = student(x)
    loss = F.cross_entropy(s_logits, y) + kl_divergence(s_logits, t_logits, TAU)
    opt.zero_grad()
    loss.backward()
    opt.step()


def algo_step(algo: SingleTeacherDistill, opt: torch.optim.Optimizer, x, y) -> None:
    losses = algo.loss(x, y)
    opt.zero_grad()
    algo.total_loss(losses).backward()
    opt.step()


def measure(name: str, make_student, student_logits: str, batch: int, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    teacher = DigitsCNN(width=32).eval()
    student_a = make_student()
    student_b = copy.deepcopy(student_a)
    teacher_b = copy.deepcopy(teacher)
    student_a.train()
    opt_hand = torch.optim.SGD(student_a.parameters(), lr=0.01)
    algo = SingleTeacherDistill(student_b, teacher_b, kd_config(student_logits))
    algo.train()
    opt_algo = torch.optim.SGD(algo.trainable_parameters(), lr=0.01)
    x = torch.rand(batch, 1, 8, 8)
    y = torch.randint(0, 10, (batch,))
    for _ in range(warmup):
        hand_step(student_a, teacher, opt_hand, x, y)
        algo_step(algo, opt_algo, x, y)
    hand_t, algo_t, ratios = [], [], []
    for i in range(repeats):
        # alternate which one goes first so neither always runs on a "warmer" cache
        order = (0, 1) if i % 2 == 0 else (1, 0)
        times = [0.0, 0.0]
        for which in order:
            start = time.perf_counter()
            if which == 0:
                hand_step(student_a, teacher, opt_hand, x, y)
            else:
                algo_step(algo, opt_algo, x, y)
            times[which] = time.perf_counter() - start
        hand_t.append(times[0])
        algo_t.append(times[1])
        ratios.append(times[1] / times[0])
    return {
        "setting": name,
        "hand_ms": 1e3 * statistics.median(hand_t),
        "algo_ms": 1e3 * statistics.median(algo_t),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/benchmarks/distill.md", help="markdown file ('' to skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        measure("DigitsCNN(32) -> DigitsMLP(16)", DigitsMLP, "fc2", args.batch, args.repeats, args.warmup),
        measure(
            "DigitsCNN(32) -> DigitsSmallCNN(8)", DigitsSmallCNN, "fc", args.batch, args.repeats, args.warmup
        ),
    ]
    head = f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.repeats} interleaved pairs"
    lines = [
        "| teacher -> student | hand-written KD step (ms) | torchpare step (ms) | median ratio |",
        "|---|---|---|---|",
        *(f"| {r['setting']} | {r['hand_ms']:.3f} | {r['algo_ms']:.3f} | {r['ratio']:.3f} |" for r in rows),
    ]
    table = "\n".join(lines)
    print(head)
    print(table)
    if args.out:
        body = (
            "## Overhead of SingleTeacherDistill + ConfigurableDistiller (`benchmarks/distill_overhead.py`)\n\n"
            "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_overhead.py` "
            f"({head}).\n\n"
            "One training step (teacher forward under no_grad, student forward, CE + KL(tau=4), backward, "
            "SGD step) through torchpare vs the same step written by hand, same models, interleaved in one "
            "process; median of per-pair ratios. Target <= 1.05. Absolute times are noisy on a shared "
            "machine; the interleaved ratio is what to compare.\n\n" + table + "\n"
        )
        write_section(args.out, "distill_overhead", body)


if __name__ == "__main__":
    main()
