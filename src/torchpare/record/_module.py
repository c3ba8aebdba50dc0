"""Shared set-up of the recorders whose source is a dotted name inside the model given to ``initialize``."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from torchpare._utils import get_submodule
from torchpare.record.base import BaseRecorder, RecorderNotInitializedError

__all__ = ["ModelRecorder", "ModuleHookRecorder"]


class ModelRecorder(BaseRecorder):
    """A recorder bound by ``initialize(model)`` to an ``nn.Module`` in which its source must exist.

    The model is kept, not what the source names in it: subclasses look the source up again on every
    enter, so a module or parameter replaced after ``initialize`` (e.g. by pruning) is still found.
    """

    #: What the model is for, in the error for an ``initialize`` argument that is not an ``nn.Module``.
    _model_role = "to record from"

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._model: nn.Module | None = None

    def _prepare(self, model: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{self._who()}: initialize(model) needs the nn.Module {self._model_role}, "
                f"got {type(model).__name__}."
            )
        self._check_source(model)
        self._model = model

    def _check_source(self, model: nn.Module) -> None:
        """Raise (naming the closest names) if the source does not exist in ``model``."""
        raise NotImplementedError

    def _bound_model(self) -> nn.Module:
        model = self._model
        if model is None:
            raise RecorderNotInitializedError(f"{self._who()}: call recorder.initialize(model) first.")
        return model


class ModuleHookRecorder(ModelRecorder):
    """A recorder whose source is a module name (``""`` = the model itself) hooked while active.

    The hook handle exists only inside the context.
    """

    _transient = ("_handle",)

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._parts: tuple[str, ...] = tuple(source.split(".")) if source else ()
        self._handle: RemovableHandle | None = None

    def _check_source(self, model: nn.Module) -> None:
        get_submodule(model, self._source, who=self._who())

    def _module(self) -> nn.Module:
        model = self._bound_model()
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
