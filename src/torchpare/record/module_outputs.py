"""ModuleOutputsRecorder: record what a submodule returns, one record per call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torchpare.record._module import ModuleHookRecorder
from torchpare.record.base import tag_version
from torchpare.registry import RECORDERS

__all__ = ["ModuleOutputsRecorder"]


def _append_output(append: Callable[[Any], None], module: Any, args: Any, output: Any) -> None:
    append(tag_version(output))  # a later in-place op on the output is reported when the record is read


@RECORDERS.register(aliases=("ModuleOutputs",))
class ModuleOutputsRecorder(ModuleHookRecorder):
    """Record the outputs of the module named ``source`` (a forward hook, only inside the context).

    Args:
        source: Dotted module name inside the model (``"layer1.0.conv1"``; ``""`` = the model).

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> recorder = ModuleOutputsRecorder("0")
        >>> recorder.initialize(model)
        >>> with recorder:
        ...     _ = model(torch.ones(1, 2))
        >>> recorder.get_record_data().shape
        torch.Size([1, 3])
    """

    def _attach(self) -> None:
        self._handle = self._module().register_forward_hook(partial(_append_output, self._recorder_append()))
