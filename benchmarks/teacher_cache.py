"""Epoch time of distillation with the teacher-output cache, relative to a student-only epoch.

Digits (1078 training images, batch 64), student DigitsMLP(16), frozen teacher DigitsCNN(20), logit KD.
Each setting runs one epoch through the same Trainer; the cached setting's cache is filled beforehand.
Prints median epoch times over repeats and the ratios (target: cached / student-only <= 1.1).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/teacher_cache.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from torchpare.engine.cache import CachedObjective, TeacherCache
from torchpare.engine.data import load_digits_split
from torchpare.engine.demo import kd_distiller
from torchpare.engine.runner import DigitsData
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP

REPEATS = 7


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

    _epoch_time(cached_kd)  # fills the cache
    assert cache.filled_fraction == 1.0
    times: dict[str, list[float]] = {"student only": [], "KD, live teacher": [], "KD, cached teacher": []}
    for _ in range(REPEATS):  # interleaved, so machine noise hits every setting alike
        times["student only"].append(_epoch_time(student_only))
        times["KD, live teacher"].append(_epoch_time(live_kd))
        times["KD, cached teacher"].append(_epoch_time(cached_kd))
    base = statistics.median(times["student only"])
    print(f"epoch time, median of {REPEATS} (digits, {n} images, batch 64, 1 thread)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:20s} {1e3 * med:8.1f} ms   {med / base:5.2f}x student-only")


DATA = DigitsData(load_digits_split(0))

if __name__ == "__main__":
    main()
