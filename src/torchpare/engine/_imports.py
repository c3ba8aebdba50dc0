"""Where the engine finds ``prune`` and ``recover`` (their sub-module names shadow the functions)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["prune_function", "recover_function"]


def _first(name: str, modules: tuple[str, ...]) -> Callable[..., Any]:
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except ModuleNotFoundError:
            continue
    raise ImportError(f"torchpare: {name}() is not available (looked in {', '.join(modules)}).")


def prune_function() -> Callable[..., Any]:
    """``torchpare.prune.prune``."""
    return _first("prune", ("torchpare.prune.target",))


def recover_function() -> Callable[..., Any]:
    """``torchpare.distill.recover``."""
    return _first("recover", ("torchpare.distill.recovery", "torchpare.distill.recover"))
