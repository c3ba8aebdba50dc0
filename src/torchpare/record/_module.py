"""Shared set-up of the recorders that hook an ``nn.Module`` found by its dotted name."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from torchpare._utils import get_submodule
from torchpare.record.base import BaseRecorder, RecorderNotInitializedError

__all__ = ["ModuleHookRecorder"]


class ModuleHookRecorder(BaseRecorder):
    """A recorder whose source is a module name (``""`` = the model itself) hooked while active.

    The model is kept and the module looked up again on every enter, so a module replaced after
    ``initialize`` (e.g. by pruning) is still found. The hook handle exists only inside the context.
    """

    _transient = ("_handle",)

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._model: nn.Module | None = None
        self._parts: tuple[str, ...] = ()
        self._handle: RemovableHandle | None = None

    def _prepare(self, model: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{self._who()}: initialize(model) needs the nn.Module to record from, "
                f"got {type(model).__name__}."
            )
        get_submodule(model, self._source, who=self._who())  # raises with the closest names
        self._model = model
        self._parts = tuple(self._source.split(".")) if self._source else ()

    def _module(self) -> nn.Module:
        model = self._model
        if model is None:
            raise RecorderNotInitializedError(f"{self._who()}: call recorder.initialize(model) first.")
        # Walk ``_modules`` directly: a tenth of ``get_submodule``'s cost, which matters with 50
        # recorders entered every step; anything unusual falls back to the checked lookup.
        module = model
        try:
            for part in self._parts:
                module = module._modules[part]
        except (KeyError, AttributeError, TypeError):
            return get_submodule(model, self._source, who=self._who())
        if module is None:
            return get_submodule(model, self._source, who=self._who())
        return module

    def _detach(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()
