"""Dependency-graph build time: torchpare vs Torch-Pruning, as a multiple of one eval forward.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build.py [zoo names...]`` (``torch-pruning``
optional; all zoo models by default).
Each model is timed in ONE process, the measurements side by side, median of repeats. Torch-Pruning
is timed twice: ``build_dependency`` alone, and with ``get_all_groups`` (torchpare's build includes
the groups). ``hf_llama`` is skipped for Torch-Pruning: it hangs on grouped-query attention.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import warnings
from typing import Any

import torch

from torchpare.prune import DependencyGraph
from torchpare.zoo import ZOO

REPEATS = 7


def _forward(model: Any, x: Any) -> Any:
    return model(**x) if isinstance(x, dict) else model(x)


def _first_tensor(out: Any) -> torch.Tensor:
    """Torch-Pruning walks ``grad_fn`` from one tensor: the logits of an HF output."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    return next(v for v in values if isinstance(v, torch.Tensor))


def _median(fn: Any) -> float:
    times = []
    for _ in range(REPEATS):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _torch_pruning(tp: Any, model: Any, x: Any, groups: bool) -> None:
    kwargs = (
        {"forward_fn": lambda m, inp: m(**inp), "output_transform": _first_tensor}
        if isinstance(x, dict)
        else {}
    )
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, **kwargs)
    if groups:
        list(graph.get_all_groups())


def bench(name: str, tp: Any) -> str:
    torch.manual_seed(0)
    model, x = ZOO[name]()
    model.eval()
    with torch.no_grad():
        _forward(model, x)
        fwd = _median(lambda: _forward(model, x))
    ours = _median(lambda: DependencyGraph.build(model, x))
    row = f"{name:16s} {fwd * 1e3:10.2f} {ours * 1e3:12.1f} {ours / fwd:6.1f}"
    if tp is None or name == "hf_llama":
        return row + ("   (Torch-Pruning hangs on GQA)" if tp is not None else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = _median(lambda: _torch_pruning(tp, model, x, groups=False))
            theirs_g = _median(lambda: _torch_pruning(tp, model, x, groups=True))
        except Exception as exc:  # Torch-Pruning fails on some HF models: report it and go on
            return row + f"   Torch-Pruning fails: {type(exc).__name__}"
    return (
        row
        + f" {theirs * 1e3:8.1f} {theirs / fwd:6.1f} {theirs_g * 1e3:9.1f} {theirs_g / fwd:6.1f} {theirs_g / ours:8.2f}"
    )


def main() -> None:
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
        print("torch-pruning not installed: only torchpare is timed", file=sys.stderr)
    torch.set_num_threads(1)
    print(
        f"{'model':16s} {'forward ms':>10s} {'torchpare ms':>12s} {'x fwd':>6s} {'TP ms':>8s} {'x fwd':>6s} "
        f"{'TP+groups':>9s} {'x fwd':>6s} {'TP+g/ours':>8s}"
    )
    names = sys.argv[1:] or list(ZOO)  # optional: a subset of zoo names
    for name in names:
        print(bench(name, tp), flush=True)


if __name__ == "__main__":
    main()
