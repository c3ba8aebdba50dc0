"""RecorderManager: a named set of recorders, built from config dicts, entered and exited together."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torchpare._context import ContextGroup, UnknownNameError
from torchpare.record.base import BaseRecorder
from torchpare.registry import RECORDERS

__all__ = ["RecorderManager", "UnknownRecorderError"]


class UnknownRecorderError(UnknownNameError):
    """``get_recorder`` was asked for a name the manager does not have (a ``KeyError``)."""


class RecorderManager(ContextGroup[BaseRecorder]):
    """Hold recorders by name; ``initialize(model)`` and ``with manager:`` apply to all of them.

    Args:
        recorders: ``name -> recorder`` where each value is a :class:`BaseRecorder` or a config dict
            built through the ``RECORDERS`` registry (``{"type": "ModuleOutputs", "source": "fc"}``).

    Raises:
        TypeError: a name is not a string, or a value is neither a recorder nor a config dict.
        torchpare.registry.UnknownTypeError: a config names an unknown recorder type.
        torchpare.registry.BuildError: a config's arguments do not fit the recorder.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> manager = RecorderManager({"hidden": {"type": "ModuleOutputs", "source": "0"},
        ...                            "weight": {"type": "Parameter", "source": "0.weight"}})
        >>> manager.initialize(model)
        >>> with manager:
        ...     _ = model(torch.ones(1, 2))
        >>> manager.get_recorder("hidden").get_record_data().shape
        torch.Size([1, 3])
        >>> [name for name, _ in manager]
        ['hidden', 'weight']
    """

    _item_type = BaseRecorder
    _registry = RECORDERS
    _noun = ("recorder", "recorders")
    _config_example = "{'type': 'ModuleOutputs', 'source': 'fc'}"
    _unknown_error = UnknownRecorderError

    def __init__(self, recorders: Mapping[str, BaseRecorder | Mapping[str, Any]]) -> None:
        super().__init__(recorders)
        self._needed: tuple[BaseRecorder, ...] | None = None  # None: every recorder is entered
        self._needed_names: frozenset[str] | None = None

    @property
    def needed(self) -> frozenset[str]:
        """Names of the recorders a ``with manager:`` enters (all of them unless :meth:`set_needed`)."""
        return frozenset(self._items) if self._needed_names is None else self._needed_names

    def set_needed(self, names: Iterable[str] | None) -> None:
        """Record only the named recorders from now on (the losses read nothing else); ``None``: all.

        A recorder left out is not hooked at all, so it costs nothing during the forward; its buffer
        is emptied, and reading it raises :class:`~torchpare.record.RecordIndexError` saying it was
        left out here.

        Args:
            names: Recorder names, or ``None`` to record with every recorder again.

        Raises:
            UnknownRecorderError: a name is not in the manager (the message lists the known names).
            ValueError: called inside the manager's context.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
            >>> manager = RecorderManager({"a": {"type": "ModuleOutputs", "source": "0"},
            ...                            "b": {"type": "ModuleOutputs", "source": "1"}})
            >>> manager.initialize(model)
            >>> manager.set_needed(["b"])
            >>> with manager:
            ...     _ = model(torch.ones(1, 2))
            >>> len(manager.get_recorder("a").data_buffer), len(manager.get_recorder("b").data_buffer)
            (0, 1)
        """
        if self._stacks:
            raise ValueError(f"{type(self).__name__}.set_needed() called inside `with manager:`; call it before.")
        if names is None:
            self._needed = self._needed_names = None
            for recorder in self._items.values():
                recorder._idle_reason = None
            return
        if isinstance(names, str):
            names = [names]
        chosen = {name: self._get(name) for name in names}
        self._needed_names = frozenset(chosen)
        self._needed = tuple(rec for name, rec in self._items.items() if name in chosen)
        for name, recorder in self._items.items():
            if name in chosen:
                recorder._idle_reason = None
            else:
                recorder.release()
                recorder._idle_reason = (
                    f"{type(self).__name__}.set_needed() left {name!r} out, so it records nothing; "
                    f"add it to the needed names (or call set_needed(None))"
                )

    def _active_items(self) -> Any:
        return self._items.values() if self._needed is None else self._needed

    def release(self) -> None:
        """Drop every recorder's records now (call it once the losses have read them).

        Example:
            >>> import torch
            >>> from torch import nn
            >>> manager = RecorderManager({"out": {"type": "ModuleOutputs", "source": ""}})
            >>> manager.initialize(nn.Linear(2, 2))
            >>> with manager:
            ...     _ = manager.get_recorder("out")
            >>> manager.release()
        """
        for recorder in self._items.values():
            recorder.release()

    @property
    def recorders(self) -> dict[str, BaseRecorder]:
        """The recorders by name (a copy; changing it does not change the manager)."""
        return dict(self._items)

    def initialize(self, model: Any = None) -> None:
        """Call ``initialize(model)`` on every recorder (function/method recorders ignore ``model``).

        Raises:
            TypeError, AttributeError: as raised by the recorders, e.g. a source missing in ``model``.
        """
        for recorder in self._items.values():
            recorder.initialize(model)

    def get_recorder(self, name: str) -> BaseRecorder:
        """Return the recorder registered under ``name``.

        Raises:
            UnknownRecorderError: (a ``KeyError``) ``name`` is unknown; the message lists the known names.
        """
        return self._get(name)
