"""Reversible, stackable patching of functions and methods (shared by recorders and deliveries).

A function ``pkg.mod.func`` or a method ``pkg.mod.Class.method`` is patched by replacing the attribute
on its owner (the module or the class) with one *dispatcher*. Each active patch adds an *interceptor*
to that site; the dispatcher runs the interceptors as a chain (the most recently added one outermost,
within its ``patch_layer``) ending in the original callable. Removing an interceptor only rebuilds the chain, so patches may be
removed in any order; when the last one goes, the owner's attribute is restored exactly (an inherited
method is deleted from the subclass again rather than copied onto it).

Limitation: code that bound the callable before patching (``from pkg.mod import func``, or a bound
method saved in a variable) keeps calling the original; only lookups through the owner see the patch.

Example:
    >>> import json
    >>> class Upper:
    ...     def intercept(self, call_next, args, kwargs):
    ...         return call_next(*args, **kwargs).upper()
    >>> handle = patch_path("json.dumps", Upper(), kind="function")
    >>> json.dumps("a")
    '"A"'
    >>> handle.remove()
    >>> json.dumps("a")
    '"a"'
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torchpare._utils import resolve_import_path

__all__ = [
    "Interceptor",
    "PatchTarget",
    "PatchHandle",
    "PathPatching",
    "resolve_target",
    "patch_target",
    "patch_path",
]

_MISSING = object()
_LOCK = threading.RLock()
_SITES: dict[tuple[int, str], _PatchSite] = {}


class Interceptor(Protocol):
    """Something that wraps one call: ``intercept(call_next, args, kwargs) -> result``.

    ``call_next(*args, **kwargs)`` runs the rest of the chain (ultimately the original callable);
    an interceptor may skip it (deliveries replaying a stored output do). An optional integer
    attribute ``patch_layer`` (default 0) orders the chain: higher layers run outside lower ones
    whatever the order of installation; recorders use 1 so that they observe what a delivery
    (layer 0) hands to the caller.
    """

    def intercept(self, call_next: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Handle one call."""
        ...


@dataclass(frozen=True)
class PatchTarget:
    """A resolved patch site.

    Attributes:
        path: The import path as given.
        owner: The module or class holding the attribute.
        attr: The attribute name.
        func: The underlying callable (``staticmethod``/``classmethod`` unwrapped).
        binding: ``"function"`` (module attribute), ``"method"`` (receives ``self``), ``"classmethod"``
            (receives ``cls``) or ``"staticmethod"`` (receives neither).
    """

    path: str
    owner: Any
    attr: str
    func: Callable[..., Any]
    binding: Literal["function", "method", "classmethod", "staticmethod"]

    @property
    def passes_receiver(self) -> bool:
        """Whether the callable's first argument is ``self``/``cls`` (dropped by input recorders)."""
        return self.binding in ("method", "classmethod")


def resolve_target(path: str, kind: Literal["function", "method"], who: str) -> PatchTarget:
    """Resolve ``"pkg.mod.func"`` (kind ``"function"``) or ``"pkg.mod.Class.method"`` (kind ``"method"``).

    Args:
        path: Import path of the callable.
        kind: ``"function"`` requires the owner to be a module, ``"method"`` requires a class.
        who: Prefix for error messages (``"FunctionOutputsRecorder(source='x.y')"``).

    Returns:
        The :class:`PatchTarget`.

    Raises:
        ValueError: ``path`` is not a dotted path.
        ImportError: no prefix of ``path`` can be imported.
        AttributeError: a name along the path is missing (the message names the closest ones).
        TypeError: the owner has the wrong kind, or the attribute is not a patchable callable.
    """
    owner, attr, _ = resolve_import_path(path, who)
    with _LOCK:
        site = _SITES.get((id(owner), attr))
        if site is not None and site.owner is owner:  # already patched: describe the original
            return PatchTarget(path, owner, attr, site.func, site.binding)
    raw = _raw_attribute(owner, attr)
    if kind == "function":
        if not isinstance(owner, types.ModuleType):
            raise TypeError(
                f"{who}: {path!r} is an attribute of {type(owner).__name__} {getattr(owner, '__name__', owner)!r}, "
                f"not of a module; use the Method* variant for 'pkg.module.Class.method' paths."
            )
        if not callable(raw):
            raise TypeError(f"{who}: {path!r} is a {type(raw).__name__}, not a function.")
        return PatchTarget(path, owner, attr, raw, "function")
    if not isinstance(owner, type):
        raise TypeError(
            f"{who}: {path!r} must name a method of a class ('pkg.module.Class.method'), but its owner "
            f"is a {type(owner).__name__}; use the Function* variant for module-level functions."
        )
    if isinstance(raw, staticmethod):
        return PatchTarget(path, owner, attr, raw.__func__, "staticmethod")
    if isinstance(raw, classmethod):
        return PatchTarget(path, owner, attr, raw.__func__, "classmethod")
    if callable(raw):
        # Callables without __get__ (builtins, partials) do not bind ``self`` when stored in a class.
        binding = "method" if hasattr(raw, "__get__") else "staticmethod"
        return PatchTarget(path, owner, attr, raw, binding)
    raise TypeError(
        f"{who}: {path!r} is a {type(raw).__name__}, not a method; properties and data attributes "
        f"cannot be patched."
    )


def _raw_attribute(owner: Any, attr: str) -> Any:
    raw = owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else _MISSING
    return inspect.getattr_static(owner, attr) if raw is _MISSING else raw


class PatchHandle:
    """Removes one interceptor from its site; ``remove()`` is idempotent."""

    __slots__ = ("_site", "_interceptor")

    def __init__(self, site: _PatchSite, interceptor: Interceptor) -> None:
        self._site: _PatchSite | None = site
        self._interceptor = interceptor

    @property
    def active(self) -> bool:
        """Whether the interceptor is still installed."""
        return self._site is not None

    def remove(self) -> None:
        """Remove the interceptor; restores the owner's attribute when it was the last one."""
        site, self._site = self._site, None
        if site is not None:
            site.remove(self._interceptor)


class _PatchSite:
    """All active interceptors on one ``owner.attr``, and what to restore when they are gone."""

    def __init__(self, target: PatchTarget) -> None:
        self.owner = target.owner
        self.attr = target.attr
        self.original_own = target.owner.__dict__.get(target.attr, _MISSING)
        self.binding = target.binding
        # Re-read the attribute: ``target`` may have been resolved while another site was active.
        raw = _raw_attribute(target.owner, target.attr)
        self.func: Callable[..., Any] = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        self.interceptors: list[Interceptor] = []
        self.chain: Callable[..., Any] = self.func
        site = self

        def dispatcher(*args: Any, **kwargs: Any) -> Any:
            return site.chain(*args, **kwargs)

        functools.update_wrapper(dispatcher, self.func)  # keeps name, docstring and inspect.signature
        if target.binding == "staticmethod":
            self.installed: Any = staticmethod(dispatcher)
        elif target.binding == "classmethod":
            self.installed = classmethod(dispatcher)
        else:
            self.installed = dispatcher

    def add(self, interceptor: Interceptor, who: str) -> None:
        if not self.interceptors:
            try:
                setattr(self.owner, self.attr, self.installed)
            except (AttributeError, TypeError) as err:
                name = getattr(self.owner, "__name__", self.owner)
                raise TypeError(
                    f"{who}: cannot patch {name}.{self.attr} ({err}); methods of built-in (C) types "
                    f"cannot be replaced, record a Python-level caller instead."
                ) from None
        self.interceptors.append(interceptor)
        self._rebuild()

    def remove(self, interceptor: Interceptor) -> None:
        with _LOCK:
            for i, existing in enumerate(self.interceptors):
                if existing is interceptor:
                    del self.interceptors[i]
                    break
            else:
                return
            self._rebuild()
            if not self.interceptors:
                self._restore()

    def _rebuild(self) -> None:
        call: Callable[..., Any] = self.func
        # Stable sort: within a layer the latest is outermost; higher layers wrap lower ones.
        for interceptor in sorted(self.interceptors, key=_layer):
            call = _link(interceptor, call)
        self.chain = call

    def _restore(self) -> None:
        _SITES.pop((id(self.owner), self.attr), None)
        current = self.owner.__dict__.get(self.attr, _MISSING)
        if current is not self.installed:
            # Someone else replaced the attribute while we were patched; their value wraps (or ignores)
            # our dispatcher, which now passes straight through to the original. Do not clobber it.
            warnings.warn(
                f"{getattr(self.owner, '__name__', self.owner)}.{self.attr} was replaced by other code "
                f"while torchpare had it patched; leaving that replacement in place.",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        if self.original_own is _MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, self.original_own)


def _layer(interceptor: Interceptor) -> int:
    return getattr(interceptor, "patch_layer", 0)


def _link(interceptor: Interceptor, call_next: Callable[..., Any]) -> Callable[..., Any]:
    intercept = interceptor.intercept

    def call(*args: Any, **kwargs: Any) -> Any:
        return intercept(call_next, args, kwargs)

    return call


def patch_target(target: PatchTarget, interceptor: Interceptor, who: str = "patch_target()") -> PatchHandle:
    """Install ``interceptor`` on ``target``; the returned handle's ``remove()`` undoes it.

    Args:
        target: From :func:`resolve_target`.
        interceptor: Runs on every call while installed.
        who: Prefix for error messages.

    Raises:
        TypeError: the owner's attribute cannot be set (e.g. a method of a C type such as ``torch.Tensor``).
    """
    key = (id(target.owner), target.attr)
    with _LOCK:
        site = _SITES.get(key)
        if site is None:
            site = _PatchSite(target)
            site.add(interceptor, who)  # may raise before the site is recorded
            _SITES[key] = site
        else:
            site.add(interceptor, who)
    return PatchHandle(site, interceptor)


def patch_path(
    path: str, interceptor: Interceptor, kind: Literal["function", "method"], who: str = "patch_path()"
) -> PatchHandle:
    """Resolve ``path`` (see :func:`resolve_target`) and install ``interceptor`` on it."""
    return patch_target(resolve_target(path, kind, who), interceptor, who)


class PathPatching:
    """Mixin for an :class:`Interceptor` that installs itself on the callable at an import path.

    The host class provides ``_who()`` (the error-message prefix), :meth:`_import_path` and
    :meth:`intercept`, and sets ``_kind``. The target is resolved on first use and kept; list
    ``_target`` and ``_patch`` among the attributes that copies and pickles drop (a resolved target
    holds a module or class object).
    """

    _kind: Literal["function", "method"] = "function"
    _target: PatchTarget | None = None
    _patch: PatchHandle | None = None
    _who: Callable[[], str]  # provided by the host class

    def _import_path(self) -> str:
        """The ``"pkg.mod.func"`` or ``"pkg.mod.Class.method"`` path to patch."""
        raise NotImplementedError

    def intercept(self, call_next: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one patched call (see :class:`Interceptor`)."""
        raise NotImplementedError

    def _resolved(self) -> PatchTarget:
        if self._target is None:  # a copied or unpickled object drops the module reference
            self._target = resolve_target(self._import_path(), self._kind, self._who())
        return self._target

    def _install_patch(self) -> None:
        self._patch = patch_target(self._resolved(), self, self._who())

    def _remove_patch(self) -> None:
        patch, self._patch = self._patch, None
        if patch is not None:
            patch.remove()


def active_patch_count() -> int:
    """Number of patched attributes right now (tests use it to prove nothing is left behind)."""
    with _LOCK:
        return len(_SITES)
