"""MethodOutputsRecorder: record what a class's method returns, for every instance, one record per call."""

from __future__ import annotations

from torchpare.record._callable import CallableOutputsRecorder
from torchpare.registry import RECORDERS

__all__ = ["MethodOutputsRecorder"]


@RECORDERS.register(aliases=("MethodOutputs",))
class MethodOutputsRecorder(CallableOutputsRecorder):
    """Record the outputs of the method at ``source`` (``"pkg.module.Class.method"``).

    The method is patched on the class while the context is open, so calls on every instance are
    recorded; static and class methods work too, and an inherited method is put back by deleting the
    override again. Bound methods saved before the context (``f = obj.method``) are not seen.

    Args:
        source: Import path of the method, ``"pkg.module.Class.method"``.

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> recorder = MethodOutputsRecorder("torch.nn.Linear.forward")
        >>> with recorder:
        ...     _ = model(torch.ones(4, 2))
        >>> [record.shape[1] for record in recorder.data_buffer]
        [3, 1]
    """

    _kind = "method"
