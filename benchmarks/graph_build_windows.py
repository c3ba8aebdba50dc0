"""Graph build / one forward for windowed attention: Swin-like and Swin-V2-like, side by side.

Run::

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build_windows.py [--rounds 15]

For each model (eval mode, one thread) it times one ``torch.no_grad()`` forward and one
``DependencyGraph.build`` (groups included), interleaved in the same rounds (``_buildtime.py``'s
``steady`` protocol: the collector paused during each timed call), and prints the medians and their
ratio build / forward. Models:

* the zoo entries (``ZOO["swin"]`` on 2x3x16x16, ``ZOO["swinv2"]`` on 2x3x32x32);
* ``SwinLike`` and ``SwinV2Like`` at image 64, patch 4, dim 96 on 1x3x64x64 (the size of the Swin row in
  ``docs/benchmarks.md``);
* the same Swin-V2 with its attention traced op by op (a subclass with its own ``forward``, as a
  Swin-V2 without a module rule is, e.g. torchvision's): what the generic path costs.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchpare.prune import DependencyGraph
from torchpare.zoo import ZOO, SwinLike, SwinV2Like, WindowAttentionV2

try:  # run as a script (benchmarks/ on sys.path)
    from _buildtime import interleaved_ms
except ImportError:  # pragma: no cover - imported as benchmarks.graph_build_windows
    from benchmarks._buildtime import interleaved_ms


class TracedThroughV2(WindowAttentionV2):
    """Swin-V2 attention with its own ``forward``: traced op by op instead of by the module rule."""

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(windows, mask)


def _traced_through(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if type(m) is WindowAttentionV2:
            m.__class__ = TracedThroughV2
    return model


def _zoo(name: str) -> Callable[[], tuple[nn.Module, Any]]:
    return lambda: ZOO[name]()


def _sized(make: Callable[[], nn.Module]) -> Callable[[], tuple[nn.Module, Any]]:
    return lambda: (make().eval(), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))


MODELS: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "ZOO['swin'] 2x3x16x16": _zoo("swin"),
    "ZOO['swinv2'] 2x3x32x32": _zoo("swinv2"),
    "SwinLike(64, 4, 96) 1x3x64x64": _sized(lambda: SwinLike(image_size=64, patch_size=4, dim=96)),
    "SwinV2Like(64, 4, 96) 1x3x64x64": _sized(
        lambda: SwinV2Like(image_size=64, patch_size=4, dim=96, num_heads=(3, 6))
    ),
    "  same, traced through": _sized(
        lambda: _traced_through(SwinV2Like(image_size=64, patch_size=4, dim=96, num_heads=(3, 6)))
    ),
}


def bench(label: str, rounds: int) -> str:
    torch.manual_seed(0)
    model, x = MODELS[label]()
    with torch.no_grad():
        model(x)

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = DependencyGraph.build(model, x)  # warm-up (first-call caches are not the steady cost)
        t = interleaved_ms({"fwd": fwd, "build": lambda: DependencyGraph.build(model, x)}, rounds, cold=False)
    heads = sum(g.size for g in graph.groups() if g.unit == "head" and g.blocked_by is None)
    return f"{label:34s} {t['fwd']:8.2f} {t['build']:9.2f} {t['build'] / t['fwd']:7.2f} {heads:6d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':34s} {'fwd ms':>8s} {'build ms':>9s} {'build/fwd':>7s} {'heads':>6s}")
    for label in MODELS:
        print(bench(label, args.rounds), flush=True)


if __name__ == "__main__":
    main()
