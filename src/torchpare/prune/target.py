"""Deprecated module path: the budgeted :func:`~torchpare.prune.prune` lives in
:mod:`torchpare.prune.budget`, and ``sync_hf_config`` in :mod:`torchpare.prune.rules.hf_config`.

Every name read from this module emits a ``FutureWarning``; the module will be removed.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "prune": "torchpare.prune.budget",
    "PruneSummary": "torchpare.prune.budget",
    "sync_hf_config": "torchpare.prune.rules.hf_config",
}
__all__ = sorted(_MOVED)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"torchpare.prune.target.{name} moved to {_MOVED[name]}.{name}; "
            "torchpare.prune.target will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
