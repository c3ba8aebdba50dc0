"""Name -> object lookups in ``torch.nn`` / ``torch.nn.functional`` for connectors (no eval of strings)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch.nn as nn

from torchpare._utils import did_you_mean

__all__ = ["lookup_public", "lookup_module_class"]


def _is_module_class(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def lookup_public(
    namespace: ModuleType, name: str, who: str, what: str, kind: Callable[[Any], bool] = callable
) -> Any:
    """``getattr(namespace, name)`` for a public attribute satisfying ``kind``, with a did-you-mean error.

    Raises:
        TypeError: ``name`` is not a string, or names an attribute that is not of the wanted kind.
        AttributeError: no public attribute ``name`` in ``namespace`` (names the closest fitting ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"{who}: {what} must be a string, got {type(name).__name__}.")
    public = [n for n in dir(namespace) if not n.startswith("_")]
    if name.startswith("_") or name not in public:
        fitting = [n for n in public if kind(getattr(namespace, n))]
        # A wrong case ('Relu') is the commonest slip: offer the case-insensitive match first.
        same_case = [n for n in fitting if n.lower() == name.lower()]
        hint = f"; did you mean {same_case[0]!r}?" if same_case else did_you_mean(name, fitting)
        raise AttributeError(
            f"{who}: {namespace.__name__} has no {what} {name!r}{hint} Names are looked up with getattr in "
            f"{namespace.__name__}, never evaluated."
        )
    obj = getattr(namespace, name)
    if not kind(obj):
        raise TypeError(f"{who}: {namespace.__name__}.{name} is not a usable {what}.")
    return obj


def lookup_module_class(name: str, who: str, what: str = "module") -> type[nn.Module]:
    """A ``torch.nn`` Module subclass by name (e.g. ``"ReLU"``, ``"BatchNorm2d"``)."""
    return lookup_public(nn, name, who, f"{what} class", kind=_is_module_class)
