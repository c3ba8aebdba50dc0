"""ParameterRecorder: hand out a model's live parameter (or buffer) by its dotted name."""

from __future__ import annotations

from typing import Any

from torch import nn

from torchpare._utils import get_parameter
from torchpare.record._module import ModelRecorder
from torchpare.registry import RECORDERS

__all__ = ["ParameterRecorder"]


@RECORDERS.register(aliases=("Parameter",))
class ParameterRecorder(ModelRecorder):
    """Record the parameter (or buffer) named ``source``: one record, the live tensor itself.

    The record is not a copy, so a loss computed from it sends gradients into the model. The tensor
    is looked up again on every enter, so a parameter replaced after ``initialize`` (pruning does
    that) is the one returned. No hook is installed.

    Args:
        source: Dotted parameter name as in ``model.named_parameters()`` (``"head.fc.weight"``);
            buffers (``"bn.running_mean"``) work too.

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 3))
        >>> recorder = ParameterRecorder("0.weight")
        >>> recorder.initialize(model)
        >>> with recorder:
        ...     weight = recorder.get_record_data()
        >>> weight is model[0].weight
        True
    """

    _model_role = "owning the parameter"

    def _prepare(self, model: Any) -> None:
        super()._prepare(model)
        self._data_buffer = [self._lookup()]

    def _check_source(self, model: nn.Module) -> None:
        get_parameter(model, self._source, who=self._who())

    def _lookup(self) -> Any:
        model = self._bound_model()
        module_path, _, name = self._source.rpartition(".")
        try:
            return getattr(model.get_submodule(module_path) if module_path else model, name)
        except AttributeError:
            return get_parameter(model, self._source, who=self._who())

    def _attach(self) -> None:
        self._data_buffer.append(self._lookup())

    def _detach(self) -> None:
        pass
