"""RecorderManager: a named set of recorders, built from config dicts, entered and exited together."""

from __future__ import annotations

from collections.abc import Mapping
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
