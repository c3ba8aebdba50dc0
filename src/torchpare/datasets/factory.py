"""Import a ``"package.module:attribute"`` named in a config (a model or dataset factory), with importlib.

Only the module a config names is imported (``importlib.import_module``; nothing is evaluated), so a
config that names a module runs that module's code, exactly like a Python script that imports it.

Example:
    >>> import_factory("torchpare.datasets.digits:digits_data", "data.factory").__name__
    'digits_data'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["DataFileError", "FactoryImportError", "import_factory"]


class DataFileError(ValueError):
    """A data file or folder named in a config is missing, empty or unreadable; the message names the key."""


class FactoryImportError(ValueError):
    """A ``"module:attribute"`` factory that cannot be imported; the message names the key, module and attribute."""


def import_factory(spec: Any, key: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``"package.module:attribute"``, dotted attributes allowed).

    Args:
        spec: ``"my_pkg.models:build"``.
        key: The config key naming it, for messages (``model.factory``).

    Raises:
        FactoryImportError: not a ``"module:attribute"`` string, a module that cannot be imported, a
            missing attribute, or an attribute that is not callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise FactoryImportError(
            f"{key}: expected 'package.module:attribute' (e.g. 'my_pkg.models:build'), got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryImportError(
            f"{key}: cannot import module '{module_name}' ({type(exc).__name__}: {exc}); is it installed, or "
            f"is its folder on PYTHONPATH?") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryImportError(f"{key}: module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryImportError(f"{key}: '{spec}' is a {type(obj).__name__}, not a callable")
    return obj
