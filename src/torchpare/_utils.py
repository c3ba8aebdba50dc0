"""Small helpers shared by every part of torchpare: name suggestions, path lookup, atomic writes.

Nothing here imports torch-heavy parts of the library, so every module may import it.
"""

from __future__ import annotations

import difflib
import importlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "did_you_mean",
    "closest_names",
    "get_submodule",
    "get_parameter",
    "import_object",
    "resolve_import_path",
    "atomic_write_bytes",
    "atomic_save",
]


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The up to ``n`` candidates most similar to ``name`` (difflib ratio >= 0.5).

    >>> closest_names("layr3", ["layer1", "layer3", "fc"])
    ['layer3', 'layer1']
    """
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:  # dotted paths: compare the last component too
        tail = name.rsplit(".", 1)[-1]
        found = [c for c in candidates if c.rsplit(".", 1)[-1] == tail][:n]
    return found


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x' or 'y'?"`` or an empty string when nothing is close.

    >>> did_you_mean("layr3", ["layer3", "fc"])
    "; did you mean 'layer3'?"
    """
    found = closest_names(name, candidates)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"


def get_submodule(model: Any, path: str, who: str = "torchpare") -> Any:
    """``model.get_submodule(path)`` with an error naming the path and the nearest existing names.

    ``path == ""`` returns the model itself.

    Raises:
        AttributeError: no module at ``path`` (subclass of AttributeError so ``hasattr``-style code works).
    """
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        # Only on failure: walking every module per lookup was a third of prune()'s time on CNNs.
        names = [n for n, _ in model.named_modules() if n]
        raise AttributeError(
            f"{who}: no module {path!r} in {type(model).__name__}{did_you_mean(path, names)}. "
            f"Use names from model.named_modules()."
        ) from None


def get_parameter(model: Any, path: str, who: str = "torchpare") -> Any:
    """Return the parameter (or buffer) at dotted ``path`` with a helpful error when missing."""
    named = dict(model.named_parameters())
    if path in named:
        return named[path]
    buffers = dict(model.named_buffers())
    if path in buffers:
        return buffers[path]
    raise AttributeError(
        f"{who}: no parameter {path!r} in {type(model).__name__}"
        f"{did_you_mean(path, [*named, *buffers])}. Use names from model.named_parameters()."
    )


def resolve_import_path(path: str, who: str = "torchpare") -> tuple[Any, str, Any]:
    """Split ``"pkg.mod.Class.attr"`` into ``(owner, attr_name, current_value)``.

    The longest importable module prefix is imported, the rest is walked with ``getattr``.

    Raises:
        ImportError: no prefix of ``path`` is an importable module.
        AttributeError: an attribute along the path is missing (names the nearest ones).
    """
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"{who}: {path!r} is not an import path like 'package.module.function'.")
    parts = path.split(".")
    module = None
    split = 0
    for i in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        split = i
        break
    if module is None:
        raise ImportError(f"{who}: cannot import any module prefix of {path!r}.")
    owner: Any = module
    for attr in parts[split:-1]:
        if not hasattr(owner, attr):
            raise AttributeError(
                f"{who}: {'.'.join(parts[:split])!r} has no attribute {attr!r} on the way to {path!r}"
                f"{did_you_mean(attr, dir(owner))}."
            )
        owner = getattr(owner, attr)
    last = parts[-1]
    if not hasattr(owner, last):
        raise AttributeError(
            f"{who}: {getattr(owner, '__name__', owner)!r} has no attribute {last!r} (from {path!r})"
            f"{did_you_mean(last, dir(owner))}."
        )
    return owner, last, getattr(owner, last)


def import_object(path: str, who: str = "torchpare") -> Any:
    """Import and return the object at ``"pkg.mod.obj"``; errors as in :func:`resolve_import_path`."""
    return resolve_import_path(path, who)[2]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_save(path: str | os.PathLike[str], writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` onto ``path`` (atomic on POSIX).

    A crash mid-write leaves the previous file intact; the temp file is removed on error.

    Example:
        >>> import torch, tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> atomic_save(os.path.join(d, "w.pt"), lambda p: torch.save({"a": 1}, p))
        >>> torch.load(os.path.join(d, "w.pt"), weights_only=True)
        {'a': 1}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
