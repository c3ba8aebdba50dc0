"""The part every loss module shares: its ``loss_weight`` and its ``teacher_detach`` switch."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["DistillLoss"]


class DistillLoss(nn.Module):
    """Base of the loss modules: holds ``loss_weight`` and ``teacher_detach``.

    A subclass keeps its own ``__init__`` signature (configs and the registry's argument check read
    it) and its own ``forward`` argument names (the distiller maps recorded values by them); it calls
    ``super().__init__(loss_weight, teacher_detach)`` and passes the teacher input through
    :meth:`detached`. A subclass with no arguments of its own inherits this ``__init__`` as it is.

    Args:
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into the teacher input.

    Example:
        >>> import torch
        >>> t = torch.ones(2, requires_grad=True)
        >>> DistillLoss().detached(t).requires_grad, DistillLoss(teacher_detach=False).detached(t) is t
        (False, True)
    """

    def __init__(self, loss_weight: float = 1.0, teacher_detach: bool = True) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.teacher_detach = teacher_detach

    def detached(self, teacher: torch.Tensor) -> torch.Tensor:
        """``teacher`` detached when ``teacher_detach`` is set, else unchanged."""
        return teacher.detach() if self.teacher_detach else teacher
