"""Where graph-build time goes: the numbers behind the choices in ``docs/benchmarks/pruning_graph.md``.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build_costs.py

1. Group assembly: (slice, index) entries vs distinct element-range entries, and ``build_groups`` time
   on the plain-Python path vs the numpy path (median of 15, same traced context), for the zoo and a
   few larger models (``hf`` ones need ``transformers``).
2. Cold caches: one small torch op warm vs right after ``gc.collect()``, and the collection itself.
3. First calls: the first and second call of each torch op in a fresh process (after one forward of a
   zoo CNN), median over 3 processes.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import torchpare.prune.graph.group as group_module
from torchpare.prune.graph.trace import trace_labels
from torchpare.prune.labels import LabelContext
from torchpare.zoo import ZOO
from torchpare.zoo.cnn import MobileNetV2Like, ResNetBottleneck


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _larger_models() -> dict[str, Callable[[], tuple[Any, Any]]]:
    image = torch.randn(1, 3, 16, 16)
    models: dict[str, Callable[[], tuple[Any, Any]]] = {
        "resnet width 128": lambda: (ResNetBottleneck(width=128), image),
        "mobilenetv2 width 96": lambda: (MobileNetV2Like(width=96), image),
        "resnet width 512": lambda: (ResNetBottleneck(width=512), image),
    }
    try:
        import transformers as tf
    except ImportError:
        return models
    ids = {"input_ids": torch.randint(0, 1000, (1, 8))}
    models["BERT hidden 512 x 6"] = lambda: (
        tf.BertModel(
            tf.BertConfig(
                hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048, vocab_size=1000
            )
        ),
        ids,
    )
    models["LLaMA hidden 512 x 4"] = lambda: (
        tf.LlamaForCausalLM(
            tf.LlamaConfig(
                hidden_size=512,
                num_hidden_layers=4,
                num_attention_heads=8,
                num_key_value_heads=2,
                intermediate_size=1024,
                vocab_size=1000,
            )
        ),
        ids,
    )
    return models


def group_assembly() -> None:
    print("1. group assembly: entries per (slice, index) and per element range; build_groups ms")
    print(f"{'model':22s} {'slice entries':>13s} {'range entries':>13s} {'python ms':>9s} {'numpy ms':>9s}")
    builders = {name: ZOO[name] for name in ZOO} | _larger_models()
    saved = group_module._SMALL
    try:
        for name, build in builders.items():
            torch.manual_seed(0)
            model, x = build()
            model.eval()
            ctx = LabelContext(model)
            trace_labels(model, x, ctx)
            slices = sum(info.size for info in ctx.slices.values())
            ranges = sum(size for _, size in group_module._ranges(ctx)[1])
            times = []
            for small in (10**12, 0):  # every model on the Python path, then on the numpy path
                group_module._SMALL = small
                times.append(_median_ms(lambda ctx=ctx: group_module.build_groups(ctx), 15))
            print(f"{name:22s} {slices:13d} {ranges:13d} {times[0]:9.3f} {times[1]:9.3f}")
    finally:
        group_module._SMALL = saved


def cold_caches() -> None:
    print("\n2. cold caches: torch.empty(10), median of 50 (us)")
    warm, cold, collect = [], [], []
    for _ in range(50):
        t0 = time.perf_counter()
        gc.collect()
        collect.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.empty(10)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.empty(10)
        warm.append(time.perf_counter() - t0)
    print(f"warm {statistics.median(warm) * 1e6:.1f} us, right after gc.collect() "
          f"{statistics.median(cold) * 1e6:.1f} us; gc.collect() itself {statistics.median(collect) * 1e3:.1f} ms "
          f"({len(gc.get_objects())} objects)")


_FIRST_CALLS = r"""
import json, time, torch
from torchpare.zoo import ZOO
model, x = ZOO["grouped_conv"]()
model.eval()
with torch.no_grad():
    model(x)
a = torch.arange(3)
ops = {
    "arange": lambda: torch.arange(5, 69),
    "as_strided": lambda: a.as_strided((2, 3), (0, 1)),
    "tolist": lambda: a.tolist(),
    "narrow": lambda: a.narrow(0, 0, 1),
    "full": lambda: torch.full((), 3, dtype=torch.int64),
    "cat": lambda: torch.cat([a, a]),
    "where": lambda: torch.where(a == 1, a, a),
    "repeat_interleave": lambda: a.repeat_interleave(2),
    "repeat": lambda: a.repeat(2),
    "unique": lambda: torch.unique(a),
}
out = {}
for name, op in ops.items():
    t0 = time.perf_counter(); op(); t1 = time.perf_counter(); op(); t2 = time.perf_counter()
    out[name] = ((t1 - t0) * 1e6, (t2 - t1) * 1e6)
print(json.dumps(out))
"""


def first_calls(runs: int = 3) -> None:
    import json

    print(f"\n3. first calls in a fresh process (us), median of {runs} processes")
    results = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", _FIRST_CALLS], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'op':18s} {'first':>8s} {'second':>8s}")
    for name in results[0]:
        first = statistics.median(r[name][0] for r in results)
        second = statistics.median(r[name][1] for r in results)
        print(f"{name:18s} {first:8.1f} {second:8.1f}")


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    group_assembly()
    cold_caches()
    first_calls()


if __name__ == "__main__":
    main()
