"""Epoch time of distillation with the teacher-output cache, relative to a student-only epoch.

Digits (1078 training images, batch 64), student DigitsMLP(16), frozen teacher DigitsCNN(20), logit KD.
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

from torchpare.engine.cache import CachedObjective, TeacherCache
from torchpare.engine.data import load_digits_split
from torchpare.engine.demo import kd_distiller
from torchpare.engine.runner import DigitsData
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP

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


def main() -> None:
    torch.set_num_threads(1)
    teacher = DigitsCNN(width=20).eval()
    n = len(DATA.train)
    cache_dir = Path(tempfile.mkdtemp()) / "cache"
    cache = TeacherCache(teacher, cache_dir, num_samples=n, sources=("fc",))

    def student_only():
        return DigitsMLP(16)

    def live_kd():
        return ALGORITHMS.build({"type": "SingleTeacherDistill", "student": DigitsMLP(16), "teacher": teacher,
                                 "distiller": kd_distiller()})

    def cached_kd():
        algo = ALGORITHMS.build({"type": "SingleTeacherDistill", "student": DigitsMLP(16),
                                 "teacher": cache.as_module(), "distiller": kd_distiller()})
        return CachedObjective(algo, cache)

    def cached_hand_kd():
        return HandWrittenCachedKD(DigitsMLP(16), cache)

    _epoch_time(cached_kd)  # fills the cache
    assert cache.filled_fraction == 1.0
    times: dict[str, list[float]] = {"student only": [], "KD, live teacher": [], "KD, cached teacher": [],
                                     "KD, cached, hand loss": []}
    for _ in range(REPEATS):  # interleaved, so machine noise hits every setting alike
        times["student only"].append(_epoch_time(student_only))
        times["KD, live teacher"].append(_epoch_time(live_kd))
        times["KD, cached teacher"].append(_epoch_time(cached_kd))
        times["KD, cached, hand loss"].append(_epoch_time(cached_hand_kd))
    base = statistics.median(times["student only"])
    print(f"epoch time, median of {REPEATS} (digits, {n} images, batch 64, 1 thread)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:20s} {1e3 * med:8.1f} ms   {med / base:5.2f}x student-only")


DATA = DigitsData(load_digits_split(0))

if __name__ == "__main__":
    main()
