"""ModuleInputsRecorder: record the positional inputs a submodule receives, one record per call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torchpare.record._module import ModuleHookRecorder
from torchpare.registry import RECORDERS

__all__ = ["ModuleInputsRecorder"]


def _append_inputs(append: Callable[[Any], None], module: Any, args: tuple[Any, ...]) -> None:
    append(args)


@RECORDERS.register(aliases=("ModuleInputs",))
class ModuleInputsRecorder(ModuleHookRecorder):
    """Record the positional input tuple of the module named ``source`` (a forward pre-hook).

    Each record is the tuple of positional arguments of one call (keyword arguments are not part
    of it), so ``get_record_data(data_idx=0)`` is the first input.

    Args:
        source: Dotted module name inside the model (``"layer1.0.conv1"``; ``""`` = the model).

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> recorder = ModuleInputsRecorder("1")
        >>> recorder.initialize(model)
        >>> with recorder:
        ...     out = model(torch.ones(1, 2))
        >>> torch.equal(recorder.get_record_data(data_idx=0), model[0](torch.ones(1, 2)))
        True
    """

    def _attach(self) -> None:
        self._handle = self._module().register_forward_pre_hook(
            partial(_append_inputs, self._recorder_append())
        )
