"""torchpare: knowledge distillation and structured pruning for any PyTorch model.

Sub-packages are imported on first use, so ``import torchpare`` stays cheap:

    >>> import torchpare
    >>> torchpare.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("registry", "record", "deliver", "distill", "prune", "engine", "cli", "zoo", "datasets", "demo")
__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"torchpare.{name}")
    raise AttributeError(f"module 'torchpare' has no attribute {name!r}")
