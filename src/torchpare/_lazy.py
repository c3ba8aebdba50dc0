"""Lazy re-exports for package ``__init__`` files: ``name -> submodule`` resolved on first access.

Several people own different files of one package; lazy exports keep each ``__init__`` a table, so
``import torchpare.distill`` imports none of its submodules. A lazy package still registers itself:
``lazy_exports`` declares the submodules that fill the registries (``registers``; by default every
submodule of the table) with :func:`torchpare.registry.declare_sources`, and the first registry
lookup that misses imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str,
    table: dict[str, str],
    fallbacks: tuple[str, ...] = (),
    registers: tuple[str, ...] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a package whose names live in ``table[name] = submodule``.

    Names not in ``table`` are looked up in the ``fallbacks`` submodules, in order (e.g. every loss
    class is reachable as ``torchpare.distill.KLDivergence`` through the ``losses`` fallback).

    Args:
        package: The package's ``__name__``.
        table: Public name -> submodule (relative to ``package``) that defines it.
        fallbacks: Submodules searched (through their ``__all__``) for names not in ``table``.
        registers: Submodules whose import fills registries (``@LOSSES.register`` ...). They are
            declared to :func:`torchpare.registry.declare_sources` now and imported by the first
            registry lookup that misses. ``None`` (default): the fallbacks, then every submodule of
            ``table``; ``()`` when the package registers nothing.

    Example (in a package ``__init__``)::

        __getattr__, __dir__ = lazy_exports(__name__, {"Mapping": "mapping"}, fallbacks=("losses",))
    """
    from torchpare.registry import declare_sources

    if registers is None:
        registers = tuple(dict.fromkeys((*fallbacks, *table.values())))
    declare_sources([f"{package}.{sub}" for sub in registers])

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
