"""Peak memory of ``prune()`` relative to the model, with and without the meta-device trials (issue 18).

Each measurement runs in a fresh process: build a LLaMA-style ``LlamaForCausalLM`` (random weights),
then ``prune(model, tokens, target_flops_ratio=0.5)``. Resident memory (``/proc/self/statm``) is
sampled every millisecond by a thread; the report gives

* ``model MB``: bytes of parameters and buffers;
* ``peak / model``: 1 + (peak RSS during ``prune()`` - RSS just before it) / model bytes, i.e. the
  model itself plus everything ``prune()`` holds at its worst moment (1.0 = nothing extra). A prune()
  of a small model of the same kind runs first, so lazy imports and first-call caches are not counted,
  and ``malloc_trim`` hands the model's freed init buffers back before the baseline is read;
* the wall time of ``prune()``.

Modes: ``deepcopy`` forces the old target search (a deep copy of the real model per trial and per
breaking-group check, ``torchpare.prune.budget._TRIALS_ON_META = False``); ``meta`` the new one
(trials on a meta copy: shapes only); ``dry_run`` plans with ``prune(..., dry_run=True)`` (the whole
search on a meta copy, the model untouched) and then applies the plan with ``summary.apply``;
``plan_only`` the ``dry_run`` planning without the apply.

Usage (Linux, CPU)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/prune_memory.py --hidden 1024 --layers 8
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import warnings

try:  # run as a script (benchmarks/ on sys.path)
    from _memory import Peak as _Peak
    from _memory import rss as _rss
except ImportError:  # pragma: no cover - imported as benchmarks.<name>
    from benchmarks._memory import Peak as _Peak
    from benchmarks._memory import rss as _rss


def _child(mode: str, hidden: int, layers: int, dtype: str) -> dict[str, float]:
    import torch
    import transformers

    import torchpare.prune.budget as budget
    from torchpare.prune import prune

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    def build(hidden: int, layers: int) -> torch.nn.Module:
        config = transformers.LlamaConfig(
            vocab_size=8000,
            hidden_size=hidden,
            intermediate_size=int(hidden * 2.75),
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            num_key_value_heads=max(1, hidden // 256),
            max_position_embeddings=256,
            tie_word_embeddings=False,
        )
        return transformers.LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()

    tokens = {"input_ids": torch.randint(0, 8000, (1, 32), generator=torch.Generator().manual_seed(0))}
    budget._TRIALS_ON_META = mode != "deepcopy"
    # Warm-up on a small model of the same kind: lazy imports and first-call caches are not prune()'s.
    prune(build(256, 2), tokens, target_flops_ratio=0.5, dry_run=mode != "deepcopy" and mode != "meta")
    torch.manual_seed(0)
    model = build(hidden, layers)
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed init buffers back, so RSS = baseline + model
    base = _rss() - size
    start = time.perf_counter()
    apply_peak = 0.0
    with _Peak() as peak:
        _, summary = prune(
            model, tokens, target_flops_ratio=0.5, dry_run=mode != "meta" and mode != "deepcopy"
        )
    if mode == "dry_run":  # the apply alone, from its own baseline (the model before pruning)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _rss()
        with _Peak() as applied:
            summary.apply(model, tokens)
        apply_peak = 1 + (applied.peak - before) / size
    seconds = time.perf_counter() - start
    return {
        "model_mb": size / 2**20,
        "peak_over_model": max((peak.peak - base) / size, apply_peak),
        "plan_peak": (peak.peak - base) / size,
        "apply_peak": apply_peak,
        "seconds": seconds,
        "flops_ratio": summary.flops_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--modes", default="deepcopy,meta,dry_run")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="glibc MALLOC_MMAP_THRESHOLD_ for the measured process (0: glibc's dynamic default, "
        "under which freed tensors may stay resident and RSS over-states what prune() holds)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.hidden, args.layers, args.dtype)))
        return
    print(
        f"LLaMA-style hidden {args.hidden}, {args.layers} layers, {args.dtype}, prune() to 50% FLOPs, "
        f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold or 'default'}"
    )
    print(
        f"{'mode':<10} {'model MB':>9} {'peak / model':>13} {'(apply)':>8} {'prune s':>8} {'FLOPs ratio':>12}"
    )
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", mode, "--hidden", str(args.hidden)]
        cmd += ["--layers", str(args.layers), "--dtype", args.dtype]
        env = dict(os.environ)
        if args.mmap_threshold:  # big blocks via mmap, handed back on free: RSS follows live memory
            env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out = run.stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(
            f"{mode:<10} {r['model_mb']:>9.0f} {r['peak_over_model']:>13.2f} {r['apply_peak'] or float('nan'):>8.2f} "
            f"{r['seconds']:>8.1f} "
            f"{r['flops_ratio']:>12.3f}"
        )


if __name__ == "__main__":
    main()
