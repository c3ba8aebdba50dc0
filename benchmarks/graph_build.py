"""Dependency-graph build time: torchpare vs Torch-Pruning, as a multiple of one eval forward.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build.py`` (needs ``torch-pruning``).
Each model is timed in ONE process, interleaving the three measurements, median of repeats.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import warnings

import torch

from torchpare.prune import DependencyGraph
from torchpare.zoo import ZOO

REPEATS = 7


def _forward(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _median(fn) -> float:
    times = []
    for _ in range(REPEATS):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
        print("torch-pruning not installed: only torchpare is timed", file=sys.stderr)
    torch.set_num_threads(1)
    print(f"{'model':16s} {'forward ms':>10s} {'torchpare ms':>12s} {'x fwd':>6s} {'TP ms':>8s} {'x fwd':>6s} {'TP/ours':>7s}")
    for name in ZOO:
        if name == "hf_llama":  # Torch-Pruning hangs on grouped-query attention (BASELINES.md)
            continue
        torch.manual_seed(0)
        model, x = ZOO[name]()
        model.eval()
        with torch.no_grad():
            _forward(model, x)
            fwd = _median(lambda: _forward(model, x))
        ours = _median(lambda: DependencyGraph.build(model, x))
        theirs = float("nan")
        if tp is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = {"forward_fn": lambda m, inp: m(**inp)} if isinstance(x, dict) else {}
                theirs = _median(lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x, **kwargs))
        print(f"{name:16s} {fwd * 1e3:10.2f} {ours * 1e3:12.1f} {ours / fwd:6.1f} {theirs * 1e3:8.1f} "
              f"{theirs / fwd:6.1f} {theirs / ours:7.2f}")


if __name__ == "__main__":
    main()
