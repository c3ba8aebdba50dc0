"""RecorderManager: a named set of recorders, built from config dicts, entered and exited together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

from torchpare._utils import did_you_mean
from torchpare.record.base import BaseRecorder
from torchpare.registry import RECORDERS

__all__ = ["RecorderManager", "UnknownRecorderError"]


class UnknownRecorderError(KeyError):
    """``get_recorder`` was asked for a name the manager does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class RecorderManager:
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

    def __init__(self, recorders: Mapping[str, BaseRecorder | Mapping[str, Any]]) -> None:
        if not isinstance(recorders, Mapping):
            raise TypeError(
                f"RecorderManager: recorders must be a dict name -> recorder or config, "
                f"got {type(recorders).__name__}."
            )
        self._recorders: dict[str, BaseRecorder] = {}
        for name, cfg in recorders.items():
            if not isinstance(name, str):
                raise TypeError(f"RecorderManager: recorder names must be strings, got {name!r}.")
            if isinstance(cfg, Mapping):
                recorder = RECORDERS.build(cfg)
            else:
                recorder = cfg
            if not isinstance(recorder, BaseRecorder):
                raise TypeError(
                    f"RecorderManager: recorder {name!r} must be a BaseRecorder or a config dict like "
                    f"{{'type': 'ModuleOutputs', 'source': 'fc'}}, got {type(recorder).__name__}."
                )
            self._recorders[name] = recorder
        self._stacks: list[ExitStack] = []  # one per open context; recorders count their own nesting

    @property
    def recorders(self) -> dict[str, BaseRecorder]:
        """The recorders by name (a copy; changing it does not change the manager)."""
        return dict(self._recorders)

    def initialize(self, model: Any = None) -> None:
        """Call ``initialize(model)`` on every recorder (function/method recorders ignore ``model``).

        Raises:
            TypeError, AttributeError: as raised by the recorders, e.g. a source missing in ``model``.
        """
        for recorder in self._recorders.values():
            recorder.initialize(model)

    def get_recorder(self, name: str) -> BaseRecorder:
        """Return the recorder registered under ``name``.

        Raises:
            UnknownRecorderError: (a ``KeyError``) ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._recorders[name]
        except KeyError:
            known = list(self._recorders)
            raise UnknownRecorderError(
                f"RecorderManager: no recorder named {name!r}{did_you_mean(name, known)}. "
                f"Known recorders: {', '.join(map(repr, known)) or '(none)'}."
            ) from None

    def __iter__(self) -> Iterator[tuple[str, BaseRecorder]]:
        return iter(self._recorders.items())

    def __len__(self) -> int:
        return len(self._recorders)

    def __contains__(self, name: object) -> bool:
        return name in self._recorders

    def __repr__(self) -> str:
        return f"RecorderManager({self._recorders!r})"

    def __enter__(self) -> RecorderManager:
        stack = ExitStack()
        try:
            for recorder in self._recorders.values():
                stack.enter_context(recorder)
        except BaseException:
            stack.close()  # undo the recorders already entered
            raise
        self._stacks.append(stack)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._stacks:
            self._stacks.pop().__exit__(exc_type, exc, tb)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stacks"] = []
        return state
