"""The 1.1B LLaMA-style config of issue 18: graph build vs forward, prune() memory and wall time.

Config: ``LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
num_key_value_heads=8, intermediate_size=5632, vocab_size=96000, tie_word_embeddings=False)`` in
bfloat16, random init (nothing is downloaded): 1.12 B parameters, 2.2 GB. The vocabulary is chosen
so that 16 layers of this width make 1.1 B parameters. Inputs: one sequence of ``--seq`` tokens.

Each phase runs in a fresh child process that builds the model once (the machine's memory is shared,
so phases never overlap), with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors are handed back
to the system at once and resident memory follows live memory:

* ``build``: one eval forward (``no_grad``) and ``DependencyGraph.build``, interleaved, median over
  ``--rounds``; then one more build under ``tracemalloc``. Columns: build / forward; the build's peak
  resident memory above the model (``RSS``, everything: tensors and Python objects) and its peak
  Python-heap allocations (``tracemalloc``: the label bookkeeping, union-find and groups; tensor
  storage is not allocated through Python's allocator and is not in it), both over the model's bytes.
* ``prune``: ``prune(model, tokens, target_flops_ratio=0.5)`` (L1 scores, the target search on meta
  copies). ``peak / model`` = 1 + (peak RSS during ``prune()`` - RSS before it) / model bytes: the model
  plus everything prune() holds at its worst moment; sampled every millisecond by a thread. A prune()
  of a small model of the same kind runs first, so lazy imports and first-call caches are not counted.
* ``dry_run``: ``prune(model, ..., dry_run=True)`` (plan: scores from the real weights, search on a
  meta copy), then ``summary.apply(model, tokens)``; peaks of each, the plan's under ``tracemalloc`` too.
* ``meta``: the model is built on the ``meta`` device (no weights exist), planned with
  ``prune(meta_model, meta_tokens, importance="random", dry_run=True)``; then the real model is built
  and the plan applied to it. Peaks relative to the real model's bytes.

Usage (Linux, CPU; about 10 minutes on one core)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/llama_1b.py [--phases build,prune,dry_run,meta]

``--hidden/--layers/--vocab`` shrink the config for a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from typing import Any

try:  # run as a script (benchmarks/ on sys.path)
    from _memory import Peak as _Peak
    from _memory import rss as _rss
    from _memory import trim as _trim
except ImportError:  # pragma: no cover - imported as benchmarks.<name>
    from benchmarks._memory import Peak as _Peak
    from benchmarks._memory import rss as _rss
    from benchmarks._memory import trim as _trim


def _config(args: argparse.Namespace) -> Any:
    import transformers

    return transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 2.75),
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=max(256, args.seq),
        tie_word_embeddings=False,
    )


def _build(config: Any, device: str = "cpu") -> Any:
    """The model in bfloat16, initialised directly in bfloat16 (no float32 copy is ever made)."""
    import torch
    import transformers

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def _nbytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _child(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from torchpare.prune import DependencyGraph, prune

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    config = _config(args)
    gen = torch.Generator().manual_seed(0)
    tokens = {"input_ids": torch.randint(0, args.vocab, (1, args.seq), generator=gen)}
    if phase != "build":  # warm-up: imports and first-call caches are not prune()'s
        small = argparse.Namespace(**{**vars(args), "hidden": 256, "layers": 2})
        prune(_build(_config(small)), tokens, target_flops_ratio=0.5, dry_run=phase in ("dry_run", "meta"))
    out: dict[str, Any] = {"phase": phase}
    if phase == "meta":
        from torchpare.prune.counting import meta_inputs

        _trim()
        before = _rss()
        t0 = time.perf_counter()
        with _Peak() as peak:
            meta_model = _build(config, "meta")
            _, summary = prune(
                meta_model, meta_inputs(tokens), "random", target_flops_ratio=0.5, dry_run=True
            )
        out["plan_s"] = time.perf_counter() - t0
        plan_extra = peak.peak - before
        del meta_model
    torch.manual_seed(0)
    model = _build(config)
    size = _nbytes(model)
    out["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    out["model_mb"] = size / 2**20
    _trim()
    if phase == "build":
        with torch.no_grad():
            model(**tokens)  # warm the kernels
        fwd, bld = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with torch.no_grad():
                model(**tokens)
            fwd.append(time.perf_counter() - t0)
            _trim()
            base = _rss()
            t0 = time.perf_counter()
            with _Peak() as peak:
                DependencyGraph.build(model, tokens)
            bld.append(time.perf_counter() - t0)
            out["build_rss_over_model"] = max(out.get("build_rss_over_model", 0.0), (peak.peak - base) / size)
            _trim()
        out["forward_s"], out["build_s"] = statistics.median(fwd), statistics.median(bld)
        tracemalloc.start()
        graph = DependencyGraph.build(model, tokens)
        out["build_pyheap_over_model"] = tracemalloc.get_traced_memory()[1] / size
        tracemalloc.stop()
        out["groups"] = len(graph.groups())
        return out
    if phase == "meta":
        out["plan_peak"] = plan_extra / size  # nothing but Python objects and meta tensors
    before = _rss()
    t0 = time.perf_counter()
    if phase == "prune":
        with _Peak() as peak:
            _, summary = prune(model, tokens, target_flops_ratio=0.5)
        out["prune_s"] = time.perf_counter() - t0
        out["peak"] = 1 + (peak.peak - before) / size
    elif phase == "dry_run":
        with _Peak() as peak:
            _, summary = prune(model, tokens, target_flops_ratio=0.5, dry_run=True)
        out["plan_s"] = time.perf_counter() - t0
        out["plan_peak"] = 1 + (peak.peak - before) / size
        _trim()
        tracemalloc.start()
        prune(model, tokens, target_flops_ratio=0.5, dry_run=True)
        out["plan_pyheap_over_model"] = tracemalloc.get_traced_memory()[1] / size
        tracemalloc.stop()
    if phase in ("dry_run", "meta"):
        _trim()
        before = _rss()
        t0 = time.perf_counter()
        with _Peak() as peak:
            summary.apply(model, tokens)
        out["apply_s"] = time.perf_counter() - t0
        out["apply_peak"] = 1 + (peak.peak - before) / size
    out["flops_ratio"] = summary.flops_ratio
    out["params_ratio"] = summary.params_ratio
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", default="build,prune,dry_run,meta")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=96000)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args)))
        return
    print(
        f"LLaMA-style hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, bfloat16, "
        f"{args.seq} tokens, MALLOC_MMAP_THRESHOLD_=65536"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for phase in args.phases.split(","):
        cmd = [sys.executable, __file__, "--child", phase]
        for k in ("hidden", "layers", "vocab", "seq", "rounds"):
            cmd += [f"--{k}", str(getattr(args, k))]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if run.returncode:
            print(f"{phase}: failed\n{run.stderr[-2000:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        head = f"{phase:<8} {r['params_b']:.2f} B params, {r['model_mb']:.0f} MB"
        if phase == "build":
            print(
                f"{head}: forward {r['forward_s']:.2f} s, build {r['build_s']:.2f} s, "
                f"build / forward {r['build_s'] / r['forward_s']:.2f}; build peak above the model: "
                f"RSS {r['build_rss_over_model']:.2f}x, Python heap {r['build_pyheap_over_model']:.3f}x "
                f"the model; {r['groups']} groups"
            )
        elif phase == "prune":
            print(
                f"{head}: prune() {r['prune_s']:.1f} s, peak / model {r['peak']:.2f}, "
                f"FLOPs ratio {r['flops_ratio']:.3f}, params ratio {r['params_ratio']:.3f}"
            )
        else:
            pyheap = r.get("plan_pyheap_over_model")
            extra = f", Python heap {pyheap:.3f}x the model" if pyheap is not None else ""
            # on meta no weights exist while planning: the peak is what planning adds, in model sizes
            plan = (
                f"adds {r['plan_peak']:.3f}x the model"
                if phase == "meta"
                else f"peak / model {r['plan_peak']:.2f}"
            )
            print(
                f"{head}: plan {r['plan_s']:.1f} s ({plan}{extra}), "
                f"apply {r['apply_s']:.1f} s (peak / model {r['apply_peak']:.2f}), "
                f"FLOPs ratio {r['flops_ratio']:.3f}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
