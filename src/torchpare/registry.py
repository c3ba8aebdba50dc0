"""One small registry so every component can be built from a plain dict or YAML.

A type is found by its class name and by the short aliases it declares at registration::

    >>> from torchpare.registry import Registry
    >>> SHAPES = Registry("shapes")
    >>> @SHAPES.register(aliases=("Square",))
    ... class SquareShape:
    ...     def __init__(self, side: float = 1.0):
    ...         self.side = side
    >>> SHAPES.build({"type": "Square", "side": 2.0}).side
    2.0
    >>> SHAPES.get("SquareShape") is SHAPES.get("Square")
    True

Unknown names raise :class:`UnknownTypeError` naming the registry and the closest known names;
wrong constructor arguments raise :class:`BuildError` naming the type and the argument.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from torchpare._utils import did_you_mean

__all__ = [
    "Registry",
    "UnknownTypeError",
    "BuildError",
    "RECORDERS",
    "DELIVERIES",
    "LOSSES",
    "CONNECTORS",
    "DISTILLERS",
    "ALGORITHMS",
    "IMPORTANCES",
    "PRUNERS",
    "MODELS",
    "DATASETS",
]

T = TypeVar("T")


class UnknownTypeError(KeyError):
    """A config names a type that its registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class BuildError(TypeError):
    """A config's arguments do not fit the constructor of the type it names."""


class Registry:
    """A name -> class (or factory function) table with declared aliases.

    Args:
        name: Human-readable name used in error messages (``"losses"``, ``"recorders"``).

    Example:
        >>> LOSSES_DEMO = Registry("demo losses")
        >>> @LOSSES_DEMO.register()
        ... class L1:
        ...     pass
        >>> "L1" in LOSSES_DEMO
        True
    """

    def __init__(self, name: str, populate_from: tuple[str, ...] = ()) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}
        # Modules whose import registers this registry's entries; imported on first lookup so that
        # ``LOSSES.build({...})`` works without the user importing ``torchpare.distill.losses`` first.
        self._populate_from = populate_from
        self._populated = not populate_from

    def _populate(self) -> None:
        if self._populated:
            return
        self._populated = True
        for mod in self._populate_from:
            importlib.import_module(mod)

    # -- registration -------------------------------------------------------------------------
    def register(
        self, obj: Callable[..., Any] | None = None, *, name: str | None = None, aliases: tuple[str, ...] = ()
    ) -> Any:
        """Register a class or factory, as a decorator (``@REG.register(aliases=(...))``) or a call.

        Raises:
            ValueError: the name or an alias is already taken in this registry.
        """

        def _do(target: Callable[..., Any]) -> Callable[..., Any]:
            key = name or target.__name__
            for k in (key, *aliases):
                if k in self._entries or k in self._aliases:
                    existing = self._entries.get(k) or self._entries[self._aliases[k]]
                    if existing is target:
                        continue
                    raise ValueError(
                        f"Registry '{self.name}': the name {k!r} is already registered for "
                        f"{existing.__module__}.{existing.__qualname__}; choose another name or alias."
                    )
            self._entries[key] = target
            for alias in aliases:
                if alias != key:
                    self._aliases[alias] = key
            return target

        if obj is not None:
            return _do(obj)
        return _do

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """All registered class names (aliases excluded), sorted."""
        self._populate()
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """Mapping alias -> class name."""
        self._populate()
        return dict(self._aliases)

    def __contains__(self, key: object) -> bool:
        self._populate()
        return isinstance(key, str) and (key in self._entries or key in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._populate()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"

    def get(self, key: str) -> Callable[..., Any]:
        """Return the class registered under ``key`` (class name or alias).

        Raises:
            UnknownTypeError: ``key`` is unknown; the message lists the closest known names.
        """
        if not isinstance(key, str):
            raise BuildError(f"Registry '{self.name}': 'type' must be a string, got {type(key).__name__}")
        self._populate()
        if key in self._entries:
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        known = sorted([*self._entries, *self._aliases])
        hint = did_you_mean(key, known) or "."
        raise UnknownTypeError(
            f"Registry '{self.name}' has no type {key!r}{hint} "
            f"Known types: {', '.join(self.names()) or '(none)'}."
        )

    # -- building -----------------------------------------------------------------------------
    def build(self, cfg: Mapping[str, Any] | Any, **default_args: Any) -> Any:
        """Build an object from ``{"type": name, **kwargs}``; objects that are not dicts pass through.

        Args:
            cfg: A config dict with a ``type`` key, or an already built object.
            **default_args: Arguments used where ``cfg`` does not set them.

        Raises:
            UnknownTypeError: unknown ``type``.
            BuildError: ``type`` missing, or the arguments do not fit the constructor.
        """
        if not isinstance(cfg, Mapping):
            return cfg
        if "type" not in cfg:
            raise BuildError(
                f"Registry '{self.name}': config {dict(cfg)!r} has no 'type' key; "
                f"add one of: {', '.join(self.names())}."
            )
        cfg = dict(cfg)
        type_name = cfg.pop("type")
        target = type_name if callable(type_name) else self.get(type_name)
        kwargs = {**default_args, **cfg}
        check_arguments(target, kwargs, where=f"{self.name} type {getattr(target, '__name__', target)!r}")
        return target(**kwargs)


def check_arguments(target: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Check keyword arguments against ``target``'s signature before calling it.

    Raises:
        BuildError: an unknown argument (with the closest valid name) or a missing required one.
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without signatures: let the call itself decide
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = None
    else:
        accepted = [
            n
            for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
    if accepted is not None:
        for key in kwargs:
            if key not in accepted:
                hint = did_you_mean(key, accepted) or "."
                raise BuildError(
                    f"{where}: unexpected argument {key!r}{hint} "
                    f"Valid arguments: {', '.join(accepted) or '(none)'}."
                )
    for n, p in params.items():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty and n not in kwargs and n != "self":
            raise BuildError(f"{where}: missing required argument {n!r}.")


RECORDERS = Registry("recorders", populate_from=("torchpare.record",))
DELIVERIES = Registry("deliveries", populate_from=("torchpare.deliver",))
LOSSES = Registry("losses", populate_from=("torchpare.distill.losses",))
CONNECTORS = Registry("connectors", populate_from=("torchpare.distill.connectors",))
DISTILLERS = Registry("distillers", populate_from=("torchpare.distill.distiller", "torchpare.distill.algorithms"))
ALGORITHMS = Registry("algorithms", populate_from=("torchpare.distill.algorithms",))
IMPORTANCES = Registry("importances", populate_from=("torchpare.prune.importance",))
PRUNERS = Registry("pruners", populate_from=("torchpare.prune.pruners",))
MODELS = Registry("models", populate_from=("torchpare.zoo",))
DATASETS = Registry("datasets", populate_from=("torchpare.engine.data",))
