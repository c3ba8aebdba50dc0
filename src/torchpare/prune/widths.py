"""Hardware-friendly kept widths: the multiples ``prune()`` and slimmable subnets keep by default.

One home for the rule both sides follow. ``prune(round_to=None)`` rounds each channel group's kept
count to :func:`auto_round_to` of its width (halving the multiple only when the FLOPs/params target
cannot be met otherwise); ``RatioPruner(divisor="auto")`` (the default) rounds each space's widths up
to :func:`auto_divisor`, the same multiple halved until it no longer distorts the pruner's ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["AUTO_ROUND_TO", "auto_round_to", "auto_divisor", "ratio_width", "AUTO_DIVISOR_SLACK"]

AUTO_ROUND_TO: tuple[tuple[int, int], ...] = ((16, 16), (8, 4))
"""``round_to=None`` (the default): ``(minimum group width, multiple)``, first match wins; a channel
group of at least 16 channels keeps a multiple of 16, one of 8 to 15 channels a multiple of 4, smaller
groups keep exact counts (so a group of 16 to 31 channels keeps 16 or stays whole). Why 16: oneDNN
(PyTorch's CPU convolutions) computes output channels in blocks of 16 on AVX-512 CPUs, so a 3x3 conv
kept at 8 or 24 channels costs what one at 16 or 32 costs (FLOPs removed, no time saved), and a
depthwise conv runs 1.3-1.6 x slower per channel at widths that are 8 mod 16; matmul libraries (MKL,
cuBLAS) and GPU tensor cores, which want multiples of 8, run multiples of 16 as well. On the benchmark's
ResNet-like CNN the speed-up / ideal was 0.89 against 0.66 with ``round_to=8`` in the same run. A fixed
table (not one read from the machine) keeps a ``prune()`` call giving the same widths everywhere. See
``benchmarks/prune_speedup.py`` and docs/benchmarks.md, "Pruned-model speed-up"; when these multiples
cannot reach the target, the search halves them (see :func:`~torchpare.prune.prune`)."""

AUTO_DIVISOR_SLACK: float = 0.25
"""``divisor="auto"``: the most a ratio's width may grow by rounding up, as a fraction of its exact
width (``ceil(ratio * size)``). Beyond it the multiple is halved: a subnet trained as "width 0.25"
should not run at 0.33."""


def auto_round_to(channels: int) -> int:
    """The multiple ``prune(round_to=None)`` keeps in a channel group of ``channels`` channels.

    Example:
        >>> auto_round_to(256), auto_round_to(24), auto_round_to(12), auto_round_to(6)
        (16, 16, 4, 1)
    """
    for minimum, multiple in AUTO_ROUND_TO:
        if channels >= minimum:
            return multiple
    return 1


def ratio_width(size: int, ratio: float, divisor: int = 1) -> int:
    """Units a space of ``size`` keeps at width ``ratio``: ``ceil(ratio * size)`` (at least one), rounded
    up to a multiple of ``divisor`` and capped at ``size``.

    Example:
        >>> ratio_width(64, 0.3), ratio_width(64, 0.3, 8), ratio_width(6, 0.9, 4)
        (20, 24, 6)
    """
    keep = max(1, min(size, math.ceil(ratio * size - 1e-9)))
    return min(size, math.ceil(keep / divisor) * divisor)


def auto_divisor(size: int, ratios: Sequence[float]) -> int:
    """The multiple a slimmable space of ``size`` units keeps under ``divisor="auto"``.

    Starts from :func:`auto_round_to` (``size``), the multiple ``prune()`` keeps, and halves it while
    rounding up would merge two of ``ratios`` into one width or grow a ratio's width by more than
    :data:`AUTO_DIVISOR_SLACK` of its exact width. So quarter ratios of 64 channels keep multiples of 16
    (16, 32, 48, 64), of 24 channels multiples of 2 (6, 12, 18, 24).

    Example:
        >>> quarters = (0.25, 0.5, 0.75, 1.0)
        >>> auto_divisor(64, quarters), auto_divisor(24, quarters), auto_divisor(16, quarters), auto_divisor(6, quarters)
        (16, 2, 4, 1)
    """
    exact = sorted({ratio_width(size, r) for r in ratios})
    divisor = auto_round_to(size)
    while divisor > 1:
        rounded = [ratio_width(size, w / size, divisor) for w in exact]
        distinct = len(set(rounded)) == len(exact)
        close = all(r <= w * (1 + AUTO_DIVISOR_SLACK) for r, w in zip(rounded, exact))
        if distinct and close:
            return divisor
        divisor //= 2
    return 1
