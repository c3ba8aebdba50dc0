"""Slimmable networks and AutoSlim: train one supernet, search channel widths for any FLOPs target.

It stands on :mod:`torchpare.prune` (channel spaces, subnets, deployment) and
:mod:`torchpare.distill` (the algorithm contract, distillation losses); the engine trains it like
any other algorithm. See ``docs/slim.md``.
"""

from torchpare.slim.autoslim import AutoSlim
from torchpare.slim.latency import measure_latency_ms
from torchpare.slim.search import SearchResult, greedy_search
from torchpare.slim.switchable_bn import (
    SwitchableBatchNorm,
    SwitchableBatchNorm1d,
    SwitchableBatchNorm2d,
    SwitchableBatchNorm3d,
    convert_switchable_bn,
    switch_bn,
    to_plain_bn,
)

__all__ = [
    "AutoSlim",
    "SearchResult",
    "SwitchableBatchNorm",
    "SwitchableBatchNorm1d",
    "SwitchableBatchNorm2d",
    "SwitchableBatchNorm3d",
    "convert_switchable_bn",
    "greedy_search",
    "measure_latency_ms",
    "switch_bn",
    "to_plain_bn",
]
