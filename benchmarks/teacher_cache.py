"""Epoch time of distillation with the teacher-output cache, relative to a student-only epoch.

Digits (1078 training images, batch 64), students DigitsMLP(16) and DigitsSmallCNN(8), frozen teacher
DigitsCNN(20), logit KD.
Each setting runs one epoch through the same Trainer; the cached settings' cache is filled beforehand.
"KD, cached teacher" uses SingleTeacherDistill (recorders, distiller) on the cached teacher; "KD, cached,
hand loss" computes the same CE + KL by hand from the cache, isolating the cache's own cost.
Prints median epoch times over repeats and the ratios (target: cached / student-only <= 1.1).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/teacher_cache.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torchpare.datasets import load_digits_split
from torchpare.demo.digits import kd_distiller
from torchpare.engine.cache import CachedObjective, TeacherCache
from torchpare.engine.runner import DigitsData
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP, DigitsSmallCNN

REPEATS = 7


class HandWrittenCachedKD(torch.nn.Module):
    """Cross-entropy + KL(T=4) reading teacher logits from the cache: the cache's cost without the distiller's."""

    def __init__(self, student: torch.nn.Module, cache: TeacherCache) -> None:
        super().__init__()
        self.student, self.cache = student, cache

    def loss(self, inputs, targets, indices=None, **extra):
        t = self.cache.outputs(inputs, indices)["fc"]
        s = self.student(inputs)
        labelled = targets >= 0
        kd = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
        return {"ce": F.cross_entropy(s[labelled], targets[labelled]), "kd": kd}


def _epoch_time(make_objective) -> float:
    objective = make_objective()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-2, device="cpu", quiet=True)
    t0 = time.perf_counter()
    Trainer(objective, DATA.train, config=cfg).fit()
    return time.perf_counter() - t0


def _compare(label: str, make_student, student_logits: str, teacher: torch.nn.Module, cache: TeacherCache) -> None:
    def algo(t: torch.nn.Module) -> torch.nn.Module:
        return ALGORITHMS.build({"type": "SingleTeacherDistill", "student": make_student(), "teacher": t,
                                 "distiller": kd_distiller(student_logits=student_logits)})

    settings = {
        "student only": make_student,
        "KD, live teacher": lambda: algo(teacher),
        "KD, cached teacher": lambda: CachedObjective(algo(cache.as_module()), cache),
        "KD, cached, hand loss": lambda: HandWrittenCachedKD(make_student(), cache),
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(REPEATS):  # interleaved, so machine noise hits every setting alike
        for name, make in settings.items():
            times[name].append(_epoch_time(make))
    base = statistics.median(times["student only"])
    print(f"student {label}: epoch time, median of {REPEATS}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:22s} {1e3 * med:8.1f} ms   {med / base:5.2f}x student-only")


def main() -> None:
    torch.set_num_threads(1)
    teacher = DigitsCNN(width=20).eval()
    n = len(DATA.train)
    cache = TeacherCache(teacher, Path(tempfile.mkdtemp()) / "cache", num_samples=n, sources=("fc",))
    _epoch_time(lambda: CachedObjective(ALGORITHMS.build({
        "type": "SingleTeacherDistill", "student": DigitsMLP(16), "teacher": cache.as_module(),
        "distiller": kd_distiller()}), cache))  # fills the cache
    assert cache.filled_fraction == 1.0
    print(f"digits, {n} images, batch 64, 1 thread, teacher DigitsCNN(20)")
    _compare("DigitsMLP(16), 1.2k params", lambda: DigitsMLP(16), "fc2", teacher, cache)
    _compare("DigitsSmallCNN(8), 15.6k params", lambda: DigitsSmallCNN(8), "fc", teacher, cache)


DATA = DigitsData(load_digits_split(0))

if __name__ == "__main__":
    main()
