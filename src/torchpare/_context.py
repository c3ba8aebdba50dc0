"""Context-manager plumbing shared by recorders, deliveries and their managers.

Two pieces, written once here because ``torchpare.record`` and ``torchpare.deliver`` may not import
each other:

* :class:`NestedContext`: opens on the first ``with`` and closes on the last exit; nested ``with``
  blocks only count. Copies and pickles start closed, without what only lives inside the context.
* :class:`ContextGroup`: a ``name -> item`` table, built from items or registry config dicts, with
  did-you-mean lookups, entered all-or-nothing and exited together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from torchpare._utils import did_you_mean
from torchpare.registry import Registry

__all__ = ["NestedContext", "ContextGroup", "UnknownNameError"]

_Self = TypeVar("_Self", bound="NestedContext")
_Group = TypeVar("_Group", bound="ContextGroup[Any]")
T = TypeVar("T")


class NestedContext:
    """Re-entrant context manager: :meth:`_open` on the first enter, :meth:`_close` on the last exit.

    Entering an object that is already open only counts the nesting. If :meth:`_open` raises, the
    object stays closed. Attributes named in ``_transient`` (hook handles, patches, module objects)
    exist only while open; copies and pickles get ``None`` for them and start closed.

    Example:
        >>> class Lamp(NestedContext):
        ...     def _open(self):
        ...         print("on")
        ...     def _close(self):
        ...         print("off")
        >>> lamp = Lamp()
        >>> with lamp:
        ...     with lamp:
        ...         print(lamp.active)
        on
        True
        off
    """

    #: Attributes that only live inside the context; dropped when copied or pickled.
    _transient: ClassVar[tuple[str, ...]] = ()
    _depth: int = 0

    @property
    def active(self) -> bool:
        """Whether the object is inside its context right now (what it installs is in place)."""
        return self._depth > 0

    def _open(self) -> None:
        """Install whatever the context provides (runs on the outermost enter)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Remove everything :meth:`_open` installed (runs on the outermost exit); must not raise."""
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        if self._depth == 0:
            self._open()
        self._depth += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self._close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_depth"] = 0
        for name in self._transient:
            state[name] = None
        return state


class UnknownNameError(KeyError):
    """A :class:`ContextGroup` was asked for a name it does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ContextGroup(Generic[T]):
    """Named items entered and exited together; a failing enter undoes the items already entered.

    Subclasses set the class attributes, which the error messages use (``RecorderManager: no recorder
    named 'feet'; did you mean 'feat'? Known recorders: 'feat'.``).

    Args:
        items: ``name -> item``, each value an instance of ``_item_type`` or a config dict built
            through ``_registry``.

    Raises:
        TypeError: ``items`` is not a mapping, a name is not a string, or a value is neither an item
            nor a config dict.
        torchpare.registry.UnknownTypeError: a config names an unknown type.
        torchpare.registry.BuildError: a config's arguments do not fit the type.
    """

    _item_type: ClassVar[type]
    _registry: ClassVar[Registry]
    #: Singular and plural of what the group holds, for messages.
    _noun: ClassVar[tuple[str, str]]
    #: A config dict shown in the message for a value of the wrong type.
    _config_example: ClassVar[str]
    _unknown_error: ClassVar[type[UnknownNameError]] = UnknownNameError

    def __init__(self, items: Mapping[str, Any]) -> None:
        who, (noun, nouns) = type(self).__name__, self._noun
        if not isinstance(items, Mapping):
            raise TypeError(
                f"{who}: {nouns} must be a dict name -> {noun} or config, got {type(items).__name__}."
            )
        self._items: dict[str, T] = {}
        for name, cfg in items.items():
            if not isinstance(name, str):
                raise TypeError(f"{who}: {noun} names must be strings, got {name!r}.")
            item = self._registry.build(cfg) if isinstance(cfg, Mapping) else cfg
            if not isinstance(item, self._item_type):
                raise TypeError(
                    f"{who}: {noun} {name!r} must be a {self._item_type.__name__} or a config dict like "
                    f"{self._config_example}, got {type(item).__name__}."
                )
            self._items[name] = item
        # One list of entered items per open context; the items count their own nesting.
        self._stacks: list[list[T]] = []

    def _get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            noun, nouns = self._noun
            known = list(self._items)
            raise self._unknown_error(
                f"{type(self).__name__}: no {noun} named {name!r}{did_you_mean(name, known)}. "
                f"Known {nouns}: {', '.join(map(repr, known)) or '(none)'}."
            ) from None

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    def _active_items(self) -> Any:
        """The items a ``with`` enters (all of them; subclasses may skip some)."""
        return self._items.values()

    def __enter__(self: _Group) -> _Group:
        # A plain list rather than an ExitStack: entering 50 recorders every step is on the hot path.
        entered: list[Any] = []
        try:
            for item in self._active_items():
                item.__enter__()
                entered.append(item)
        except BaseException:
            for item in reversed(entered):  # undo the items already entered
                item.__exit__(None, None, None)
            raise
        self._stacks.append(entered)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._stacks:
            return
        first_error: BaseException | None = None
        for item in reversed(self._stacks.pop()):  # every item exits, even if one raises
            try:
                item.__exit__(exc_type, exc, tb)
            except BaseException as error:  # noqa: BLE001 - re-raised below, after the others exit
                if first_error is None:
                    first_error = error
        if first_error is not None:
            raise first_error

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stacks"] = []
        return state
