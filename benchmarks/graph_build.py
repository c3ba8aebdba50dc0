"""Dependency-graph build time: torchpare vs Torch-Pruning, side by side, under three protocols.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build.py [zoo names...] [--rounds 21] [--first-call 5]

``torch-pruning`` is optional (without it only torchpare is timed). For each zoo model (zoo example
inputs, eval mode, one thread) it prints one eval forward and, for each protocol of ``_buildtime.py``,
torchpare's build (groups included) next to Torch-Pruning's ``build_dependency`` + ``get_all_groups``
and the ratio TP / torchpare (> 1: torchpare is faster):

* steady: interleaved rounds, the collector paused during each timed call (the timeit convention);
* cold: ``gc.collect()`` before every timed call, so each call starts with cold CPU caches;
* first call (``--first-call K``, off by default: about 3 s per process): median over K fresh
  processes of a single build.

``hf_llama`` is not given to Torch-Pruning: it hangs on grouped-query attention.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

from torchpare.prune import DependencyGraph
from torchpare.zoo import ZOO

try:  # run as a script (benchmarks/ on sys.path) or imported by the first-call child
    from _buildtime import first_call_ms, interleaved_ms
except ImportError:  # pragma: no cover - imported as benchmarks.graph_build
    from benchmarks._buildtime import first_call_ms, interleaved_ms

TP_SKIP = {"hf_llama": "hangs on GQA"}


def forward(model: Any, x: Any) -> Any:
    return model(**x) if isinstance(x, dict) else model(x)


def _first_tensor(out: Any) -> torch.Tensor:
    """Torch-Pruning walks ``grad_fn`` from one tensor: the logits of an HF output."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    return next(v for v in values if isinstance(v, torch.Tensor))


def _tp_builder(groups: bool) -> Callable[[Any, Any], Any]:
    import torch_pruning as tp

    def build(model: Any, x: Any) -> Any:
        kwargs = (
            {"forward_fn": lambda m, inp: m(**inp), "output_transform": _first_tensor}
            if isinstance(x, dict)
            else {}
        )
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, **kwargs)
        return list(graph.get_all_groups()) if groups else graph

    return build


TOOLS: dict[str, Callable[[], Callable[[Any, Any], Any]]] = {
    "torchpare": lambda: DependencyGraph.build,
    "tp": lambda: _tp_builder(groups=True),
    "tp_build": lambda: _tp_builder(groups=False),
}


def _has_tp() -> bool:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return False
    return True


def bench(name: str, rounds: int, first_call: int, with_tp: bool) -> str:
    torch.manual_seed(0)
    model, x = ZOO[name]()
    model.eval()
    with torch.no_grad():
        forward(model, x)
        fwd = interleaved_ms({"fwd": lambda: forward(model, x)}, rounds, cold=False)["fwd"]
    tools = {"torchpare": lambda: DependencyGraph.build(model, x)}
    skip = TP_SKIP.get(name) if with_tp else "not installed"
    if skip is None:
        tp_full, tp_build = TOOLS["tp"](), TOOLS["tp_build"]()
        tools["tp"] = lambda: tp_full(model, x)
        tools["tp_build"] = lambda: tp_build(model, x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tools["tp"]()
        except Exception as exc:  # Torch-Pruning fails on some HF models: report it and go on
            skip = f"fails: {type(exc).__name__}"
            del tools["tp"], tools["tp_build"]
    cells = [f"{name:16s} {fwd:7.2f}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cold in (False, True):
            t = interleaved_ms(tools, rounds, cold)
            if skip is None:
                cells.append(f"{t['torchpare']:7.2f} {t['tp']:7.2f} {t['tp'] / t['torchpare']:5.2f}")
            else:
                cells.append(f"{t['torchpare']:7.2f} {'-':>7s} {'-':>5s}")
            if not cold:
                cells.append(f"{t['tp_build']:7.2f}" if skip is None else f"{'-':>7s}")
    if first_call:
        ours = first_call_ms(name, "torchpare", first_call)
        theirs = first_call_ms(name, "tp", first_call) if skip is None else None
        if isinstance(ours, float) and isinstance(theirs, float):
            cells.append(f"{ours:7.2f} {theirs:7.2f} {theirs / ours:5.2f}")
        else:
            cells.append(f"{ours:7.2f} {'-':>7s} {'-':>5s}" if isinstance(ours, float) else str(ours))
    if skip is not None:
        cells.append(f"  Torch-Pruning {skip}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="zoo models (default: all)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per protocol")
    parser.add_argument("--first-call", type=int, default=0, help="fresh processes per model and tool")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo models {unknown}; choose from {sorted(ZOO)}")
    with_tp = _has_tp()
    if not with_tp:
        print("torch-pruning not installed: only torchpare is timed", file=sys.stderr)
    torch.set_num_threads(1)
    head = f"{'':16s} {'fwd ms':>7s} | {'steady: ours':>12s} {'TP':>7s} {'TP/us':>5s} | {'TP bld':>7s} | "
    head += f"{'cold: ours':>10s} {'TP':>7s} {'TP/us':>5s}"
    if args.first_call:
        head += f" | {'1st: ours':>9s} {'TP':>7s} {'TP/us':>5s}"
    print(head)
    for name in args.names or list(ZOO):
        print(bench(name, args.rounds, args.first_call, with_tp), flush=True)


if __name__ == "__main__":
    main()
