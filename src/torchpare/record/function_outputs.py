"""FunctionOutputsRecorder: record what a module-level function returns, one record per call."""

from __future__ import annotations

from torchpare.record._callable import CallableOutputsRecorder
from torchpare.registry import RECORDERS

__all__ = ["FunctionOutputsRecorder"]


@RECORDERS.register(aliases=("FunctionOutputs",))
class FunctionOutputsRecorder(CallableOutputsRecorder):
    """Record the outputs of the function at import path ``source`` while the context is open.

    On enter the attribute is replaced on its module (found like ``import pkg.module``) and restored
    on exit, also when the forward raises; nested recorders on one function all record. ``initialize``
    is optional (it resolves the path early so that a typo fails at set-up).

    Limitation: code that did ``from pkg.module import func`` before the context keeps its own
    reference to the original and is not recorded; use the path of the module it is called through
    (for ``F.relu(x)`` inside a model: ``"torch.nn.functional.relu"``).

    Args:
        source: Import path of the function, ``"pkg.module.func"``.

    Raises:
        TypeError: ``source`` is not a string.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> recorder = FunctionOutputsRecorder("torch.nn.functional.relu")
        >>> with recorder:
        ...     _ = F.relu(torch.tensor([-1.0, 2.0]))
        >>> recorder.get_record_data()
        tensor([0., 2.])
    """

    _kind = "function"
