"""Graph build / one forward, two source trees side by side (before / after a change to the tracer).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build_ab.py --old /path/to/old/src --new src \
        [--repeats 5] [--rounds 5] [--clock wall|cpu] [models...]

Each repeat starts one fresh process per tree, alternating old and new (so machine load hits both alike);
each process times, on one thread, ``--rounds`` interleaved pairs of a ``torch.no_grad()`` forward and a
``DependencyGraph.build`` (after one warm-up build, which registers the transformers class rules and runs
the head probe once per class) and reports the medians. The table gives, per model and tree, the median
over repeats of the build time, the forward time and their ratio (each ratio taken within one process).
The load average is printed first: on a shared machine, compare ratios, not milliseconds.

Models (default: all): ``llama``, ``bert``, ``gpt2`` (``torchpare.zoo.hf.HF_TINY`` configs), ``shufflenet``
(``ShuffleNetV2Like(width=58)`` on 1x3x224x224), ``swinv2`` (``SwinV2Like(64, patch 4, dim 96, heads 3/6)``
on 1x3x64x64); ``swinv2_traced`` (the same, its attention traced op by op: not a default), or any other
``HF_TINY`` name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODELS = ("llama", "bert", "gpt2", "shufflenet", "swinv2")

_CHILD = r"""
import gc, json, statistics, sys, time, warnings
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from torchpare.prune.graph import DependencyGraph


def make(name):
    torch.manual_seed(0)
    if name == "shufflenet":
        from torchpare.zoo import ShuffleNetV2Like
        return ShuffleNetV2Like(width=58).eval(), torch.randn(1, 3, 224, 224)
    if name in ("swinv2", "swinv2_traced"):
        from torchpare.zoo import SwinV2Like, WindowAttentionV2
        model = SwinV2Like(image_size=64, patch_size=4, dim=96, num_heads=(3, 6)).eval()
        if name == "swinv2_traced":  # its attention traced op by op (a subclass with its own forward)
            class TracedThroughV2(WindowAttentionV2):
                def forward(self, windows, mask=None):
                    return super().forward(windows, mask)
            for m in model.modules():
                if type(m) is WindowAttentionV2:
                    m.__class__ = TracedThroughV2
        return model, torch.randn(1, 3, 64, 64)
    from torchpare.zoo.hf import hf_tiny
    model, inputs = hf_tiny(name)
    return model.eval(), inputs


def call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


rounds, clock, names, result = int(sys.argv[1]), sys.argv[2], sys.argv[3:], {}
now = time.thread_time if clock == "cpu" else time.perf_counter
for name in names:
    model, x = make(name)
    DependencyGraph.build(model, x)
    with torch.no_grad():
        call(model, x)
    builds, forwards = [], []
    for _ in range(rounds):
        gc.disable()
        t0 = now()
        with torch.no_grad():
            call(model, x)
        forwards.append(now() - t0)
        t0 = now()
        DependencyGraph.build(model, x)
        builds.append(now() - t0)
        gc.enable()
    result[name] = (statistics.median(builds) * 1e3, statistics.median(forwards) * 1e3)
print(json.dumps(result))
"""


def _run(src: str, rounds: int, clock: str, names: list[str]) -> dict[str, tuple[float, float]]:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(rounds), clock, *names], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"graph_build_ab: the run on {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="src folder of the tree before the change")
    parser.add_argument("--new", default="src", help="src folder of the tree after the change")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter; cpu: time.thread_time (CPU time of the thread: steadier on a "
        "shared, loaded machine, where wall times of millisecond calls follow the scheduler)",
    )
    parser.add_argument("models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    trees = {"old": args.old, "new": args.new}
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {k: {m: [] for m in args.models} for k in trees}
    load = []
    for _ in range(args.repeats):
        for key, src in trees.items():
            for name, times in _run(src, args.rounds, args.clock, args.models).items():
                runs[key][name].append(times)
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) over the run: {min(load):.1f}-{max(load):.1f}; clock: {args.clock}")
    print("| model | old build ms | old forward ms | old build / forward | new build ms | new forward ms "
          "| new build / forward |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        row = [name]
        for key in trees:
            pairs = runs[key][name]
            row += [
                f"{statistics.median(b for b, _ in pairs):.2f}",
                f"{statistics.median(f for _, f in pairs):.2f}",
                f"{statistics.median(b / f for b, f in pairs):.2f}",
            ]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
