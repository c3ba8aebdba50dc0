"""Lazy re-exports for package ``__init__`` files: ``name -> submodule`` resolved on first access.

Several people own different files of one package; lazy exports keep each ``__init__`` a table
and avoid import cycles between siblings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, str], fallbacks: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a package whose names live in ``table[name] = submodule``.

    Names not in ``table`` are looked up in the ``fallbacks`` submodules, in order (e.g. every loss
    class is reachable as ``torchpare.distill.KLDivergence`` through the ``losses`` fallback).

    Example (in a package ``__init__``)::

        __getattr__, __dir__ = lazy_exports(__name__, {"Mapping": "mapping"}, fallbacks=("losses",))
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            module = importlib.import_module(f"{package}.{table[name]}")
            return getattr(module, name)
        if not name.startswith("__"):
            for sub in fallbacks:
                module = importlib.import_module(f"{package}.{sub}")
                if name in getattr(module, "__all__", ()):
                    return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__
