"""Subnet pruners over channel spaces: :class:`StructurePruner`, :class:`RatioPruner`,
:class:`RandomPruner`, and :func:`deploy_subnet` (all registered in ``PRUNERS`` where they are classes).
"""

from __future__ import annotations

import warnings
from typing import Any

import torchpare.prune.counting as _counting
from torchpare.prune.pruners.deploy import deploy_subnet
from torchpare.prune.pruners.structure import RandomPruner, RatioPruner, StructurePruner

__all__ = ["StructurePruner", "RatioPruner", "RandomPruner", "deploy_subnet"]


def __getattr__(name: str) -> Any:
    if name == "module_channels":
        warnings.warn(
            "torchpare.prune.pruners.module_channels moved to torchpare.prune.counting.module_channels.",
            FutureWarning,
            stacklevel=2,
        )
        return _counting.module_channels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
