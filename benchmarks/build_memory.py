"""Graph-build memory and time for large free weights: per-entry elements (before) next to virtual ones.

Run::

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/build_memory.py [--n 2048] [--rounds 5]

A *free* weight is a parameter that an op reads without a module rule declaring its slices (``h @
torch.erf(self.w)``). Before issue 18's change every entry of it got one union-find element (40 bytes in
a Python list, plus numpy arrays while grouping); now a large one gets virtual elements, which cost
nothing per entry while no union reaches them (``prune/labels.py``). "before" is the same code with
virtual elements switched off (``labels._VIRTUAL_MIN`` raised), in the same process. For each model it
prints, per mode: the peak traced Python memory of one build (``tracemalloc``) and the peak resident
memory above the process's memory before the build (sampled every millisecond, torch tensors
included), both divided by the free weight's bytes, and the median build seconds over interleaved
rounds; the groups of both modes are checked equal. Models (``n`` = 2048: a 16 MB float32 weight):

* ``erf_matmul``: ``out(inp(x) @ erf(w))``, ``w`` n x n (blocked by the matmul: channels on two dims);
* ``erf_t_matmul``: ``out(inp(x) @ erf(w).t())``: blocked entry by entry (a transposed run; a span of
  virtual elements now);
* ``chain_reshape``: ``w`` n x 2 x n/2 through ``tanh``, ``* 2``, ``+ 1`` and a reshape to n x n;
* ``fft_matmul``: ``out(inp(x) @ fft(w).real)``: an op without a rule (blocked whole since the last
  session, no elements in either mode: the reference);
* ``position_added``: ``inp(x) + pos`` with a free n/4 x n/4 position table: a union reaches its
  virtual elements, so the build traces again with it per entry (the cost of the fallback);
* ``functional_mha``: attention through ``F.multi_head_attention_forward`` with a free packed
  in-projection weight (embed 960 at ``n`` = 2048, 8 heads), blocked whole; bytes are all its
  parameters' (the issue-18 case measured at 11.5 s / 480 MB before range marks);
* ``swinv2_traced``: ``SwinV2Like(64, 4, 96)`` with its attention traced op by op (the qkv weights are
  free parameters read by ``F.linear`` with a computed bias; the two of stage 2 are virtual): time only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memory import Peak, rss, trim  # noqa: E402

from torchpare.prune import DependencyGraph, labels  # noqa: E402


class ErfMatmul(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.inp, self.w, self.out = nn.Linear(8, n), nn.Parameter(torch.randn(n, n)), nn.Linear(n, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x) @ torch.erf(self.w))


class ErfTransposedMatmul(ErfMatmul):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x) @ torch.erf(self.w).t())


class ChainReshape(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.inp, self.w, self.out = nn.Linear(8, n), nn.Parameter(torch.randn(n, 2, n // 2)), nn.Linear(n, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (torch.tanh(self.w) * 2 + 1).reshape(self.w.shape[0], -1)
        return self.out(torch.relu(self.inp(x)) @ w)


class FFTMatmul(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.inp, self.w, self.out = nn.Linear(8, n), nn.Parameter(torch.randn(n, n)), nn.Linear(n, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inp(x) @ torch.fft.fft(self.w).real)


class PositionAdded(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.inp, self.pos, self.out = nn.Linear(8, n), nn.Parameter(torch.randn(1, n, n)), nn.Linear(n, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x) + self.pos)).mean(1)


class FunctionalMHA(nn.Module):
    """Attention through ``F.multi_head_attention_forward`` with a free packed in-projection weight
    (3e x e): the function takes ``embed_dim`` as a number, so its weight is blocked whole."""

    def __init__(self, embed_dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.inp, self.o = nn.Linear(6, embed_dim), nn.Linear(embed_dim, embed_dim)
        self.w = nn.Parameter(torch.randn(3 * embed_dim, embed_dim))
        self.embed_dim, self.num_heads = embed_dim, num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x).transpose(0, 1)
        y, _ = nn.functional.multi_head_attention_forward(
            h, h, h, self.embed_dim, self.num_heads, self.w, None, None, None, False, 0.0,
            self.o.weight, self.o.bias, need_weights=False,
        )
        return y


def _functional_mha(n: int) -> tuple[nn.Module, Any, int]:
    embed = max(8, (n * 15 // 32) // 8 * 8)  # 960 at n = 2048, a multiple of the 8 heads
    model = FunctionalMHA(embed)
    return model, torch.randn(2, 5, 6), sum(p.numel() * p.element_size() for p in model.parameters())


def _position_added(n: int) -> tuple[nn.Module, Any, int]:
    n = n // 4  # an n/4 x n/4 position table, on a batch of 2 x n/4 tokens
    model = PositionAdded(n)
    return model, torch.randn(2, n, 8), model.pos.numel() * model.pos.element_size()


def _swinv2_traced(n: int) -> tuple[nn.Module, Any, int]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from graph_build_windows import MODELS

    model, x = MODELS["  same, traced through"]()
    return model, x, 0


def _free_weight(cls: type[nn.Module]) -> Callable[[int], tuple[nn.Module, Any, int]]:
    def make(n: int) -> tuple[nn.Module, Any, int]:
        model = cls(n)
        return model, torch.randn(2, 8), model.w.numel() * model.w.element_size()

    return make


MODELS: dict[str, Callable[[int], tuple[nn.Module, Any, int]]] = {
    "erf_matmul": _free_weight(ErfMatmul),
    "erf_t_matmul": _free_weight(ErfTransposedMatmul),
    "chain_reshape": _free_weight(ChainReshape),
    "fft_matmul": _free_weight(FFTMatmul),
    "position_added": _position_added,
    "functional_mha": _functional_mha,
    "swinv2_traced": _swinv2_traced,
}


def _build(model: nn.Module, x: Any, per_entry: bool) -> DependencyGraph:
    saved = labels._VIRTUAL_MIN
    labels._VIRTUAL_MIN = 1 << 62 if per_entry else saved
    try:
        return DependencyGraph.build(model, x)
    finally:
        labels._VIRTUAL_MIN = saved


def _state(graph: DependencyGraph) -> tuple:
    groups = [(g.id, g.size, g.unit, g.members, g.exact, g.blocked_by, g.inexact_reason) for g in graph.all_groups()]
    return groups, graph.ctx.size_units


def _memory(model: nn.Module, x: Any, per_entry: bool) -> tuple[int, int]:
    """(peak traced Python bytes, peak resident bytes above the start) of one build."""
    trim()
    start = rss()
    with Peak() as peak:
        graph = _build(model, x, per_entry)
    del graph
    trim()
    tracemalloc.start()
    try:
        _build(model, x, per_entry)
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return traced, peak.peak - start


def bench(name: str, n: int, rounds: int) -> str:
    torch.manual_seed(0)
    model, x, weight_bytes = MODELS[name](n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = _state(_build(model, x, True)) == _state(_build(model, x, False))  # also the warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):  # interleaved: both modes see the same load
            for per_entry in (True, False):
                t = time.perf_counter()
                _build(model, x, per_entry)
                times[per_entry].append(time.perf_counter() - t)
        med = {mode: statistics.median(ts) for mode, ts in times.items()}
        cells = [name, "same" if same else "DIFFERENT"]
        for per_entry in (True, False):
            if weight_bytes:
                traced, resident = _memory(model, x, per_entry)
                cells += [f"{traced / weight_bytes:.2f}", f"{resident / weight_bytes:.2f}"]
            else:
                cells += ["-", "-"]
            cells.append(f"{med[per_entry]:.3f}")
    cells.append(f"{med[True] / med[False]:.2f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="free weight side (n x n float32)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per mode")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| model | groups | before: traced x | before: resident x | before: s | after: traced x "
        "| after: resident x | after: s | time before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        print(bench(name, args.n, args.rounds), flush=True)


if __name__ == "__main__":
    main()
