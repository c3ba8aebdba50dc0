"""Recorders: capture module/function/method outputs and inputs, and parameters, during a forward.

Every recorder is registered in :data:`torchpare.registry.RECORDERS` under its class name and a short
alias (``"ModuleOutputs"`` == ``"ModuleOutputsRecorder"``), so ``RecorderManager`` builds them from dicts.
"""

from torchpare.record.base import BaseRecorder, RecorderNotInitializedError, RecordIndexError
from torchpare.record.function_inputs import FunctionInputsRecorder
from torchpare.record.function_outputs import FunctionOutputsRecorder
from torchpare.record.manager import RecorderManager, UnknownRecorderError
from torchpare.record.method_inputs import MethodInputsRecorder
from torchpare.record.method_outputs import MethodOutputsRecorder
from torchpare.record.module_inputs import ModuleInputsRecorder
from torchpare.record.module_outputs import ModuleOutputsRecorder
from torchpare.record.param import ParameterRecorder

__all__ = [
    "BaseRecorder",
    "FunctionInputsRecorder",
    "FunctionOutputsRecorder",
    "MethodInputsRecorder",
    "MethodOutputsRecorder",
    "ModuleInputsRecorder",
    "ModuleOutputsRecorder",
    "ParameterRecorder",
    "RecorderManager",
    "RecordIndexError",
    "RecorderNotInitializedError",
    "UnknownRecorderError",
]
