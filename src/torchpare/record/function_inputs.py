"""FunctionInputsRecorder: record the arguments a module-level function is called with."""

from __future__ import annotations

from torchpare.record._callable import CallableInputsRecorder
from torchpare.registry import RECORDERS

__all__ = ["FunctionInputsRecorder"]


@RECORDERS.register(aliases=("FunctionInputs",))
class FunctionInputsRecorder(CallableInputsRecorder):
    """Record the arguments of every call of the function at ``source`` while the context is open.

    A record is the tuple of the call's arguments bound to the signature, positional and keyword
    alike, defaults applied, in signature order; ``arg_names`` names the items and
    ``get_record_data(data_idx="name")`` picks one by name. Patching works as for
    :class:`~torchpare.record.FunctionOutputsRecorder` (same ``from x import func`` limitation).

    Args:
        source: Import path of the function, ``"pkg.module.func"``.

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> recorder = FunctionInputsRecorder("torch.nn.functional.relu")
        >>> with recorder:
        ...     _ = F.relu(torch.tensor([-1.0, 2.0]))
        >>> recorder.arg_names
        ['input', 'inplace']
        >>> recorder.get_record_data(data_idx="inplace")
        False
    """

    _kind = "function"
