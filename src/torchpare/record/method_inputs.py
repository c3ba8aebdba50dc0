"""MethodInputsRecorder: record the arguments a class's method is called with (without ``self``)."""

from __future__ import annotations

from torchpare.record._callable import CallableInputsRecorder
from torchpare.registry import RECORDERS

__all__ = ["MethodInputsRecorder"]


@RECORDERS.register(aliases=("MethodInputs",))
class MethodInputsRecorder(CallableInputsRecorder):
    """Record the arguments of every call of the method at ``source``, for every instance.

    A record is the tuple of the call's arguments bound to the signature (defaults applied) in
    signature order, without ``self`` (or ``cls``). Patching works as for
    :class:`~torchpare.record.MethodOutputsRecorder`.

    Args:
        source: Import path of the method, ``"pkg.module.Class.method"``.

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> recorder = MethodInputsRecorder("torch.nn.Linear.forward")
        >>> with recorder:
        ...     _ = nn.Linear(2, 3)(torch.ones(4, 2))
        >>> recorder.arg_names
        ['input']
        >>> recorder.get_record_data(data_idx=0).shape
        torch.Size([4, 2])
    """

    _kind = "method"
