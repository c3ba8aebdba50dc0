"""How graph-build times are taken, shared by the ``graph_build*.py`` scripts, ``prune_vs_torch_pruning.py``,
``hf_coverage.py`` and ``graph_build_input_size.py``.

Two in-process protocols, both *interleaved* (each round calls every tool once, in turn, so machine
noise hits them alike) and reported as the median over rounds:

* ``steady``: the timeit convention. No ``gc.collect()`` between calls and the collector paused during
  each timed call, so neither tool is charged for collecting the other's garbage.
* ``cold``: ``gc.collect()`` before every timed call. The collection walks every Python object, which
  evicts the CPU caches: each call then starts cold, and tools that touch more distinct code and torch
  ops pay more (``graph_build_costs.py`` measures how much).

``first_call_ms`` runs one build in a fresh process (after one forward with and one without autograd,
so the model's own kernels are warm for both tools): what a user's single build costs.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def interleaved_ms(tools: dict[str, Callable[[], Any]], rounds: int, cold: bool) -> dict[str, float]:
    """Median milliseconds of each tool over ``rounds`` interleaved rounds (see the module docstring)."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(rounds):
        for name, fn in tools.items():
            if cold:
                gc.collect()
            was_enabled = gc.isenabled()
            if not cold:
                gc.disable()
            try:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            finally:
                if was_enabled:
                    gc.enable()
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def build_and_forward_s(
    model: Any, inputs: dict[str, Any], rounds: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """Median seconds of ``DependencyGraph.build(model, inputs)`` and of one ``no_grad`` forward
    ``model(**inputs)``, over ``rounds`` interleaved rounds (forward, then build), after one untimed
    build (the first registers the class rules). Warnings are silenced. ``clock``: wall time by default,
    ``time.thread_time`` for the CPU time of this thread (waiting for a core on a busy machine does not
    count)."""
    import torch

    from torchpare.prune.graph import DependencyGraph

    build, forward = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DependencyGraph.build(model, inputs)
        for _ in range(rounds):
            t0 = clock()
            with torch.no_grad():
                model(**inputs)
            forward.append(clock() - t0)
            t0 = clock()
            DependencyGraph.build(model, inputs)
            build.append(clock() - t0)
    return statistics.median(build), statistics.median(forward)


_FIRST_CALL = r"""
import sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench_dir!r})
from graph_build import TOOLS, forward
from torchpare.zoo import ZOO
torch.manual_seed(0)
model, x = ZOO[{name!r}]()
model.eval()
build = TOOLS[{tool!r}]()
with torch.no_grad():
    forward(model, x)
forward(model, x)
t0 = time.perf_counter()
build(model, x)
print((time.perf_counter() - t0) * 1e3)
"""


def first_call_ms(name: str, tool: str, runs: int, timeout: float = 120.0) -> float | str:
    """Median over ``runs`` fresh processes of the first ``tool`` build of zoo model ``name`` (ms),
    or the error text of a run that failed."""
    code = _FIRST_CALL.format(bench_dir=str(Path(__file__).parent), name=name, tool=tool)
    times = []
    for _ in range(runs):
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return f"no result within {timeout:.0f} s"
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            return lines[-1][:60] if lines else f"exit {proc.returncode}"
        times.append(float(proc.stdout.strip().splitlines()[-1]))
    return statistics.median(times)
