"""L1 distance between features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_same_shape
from torchpare.registry import LOSSES

__all__ = ["L1Loss"]


@LOSSES.register(aliases=("L1",))
class L1Loss(DistillLoss):
    """``L = loss_weight * reduce(|s - t|)`` (``torch.nn.functional.l1_loss``).

    Args:
        reduction: ``"mean"`` (default), ``"sum"``; a scalar is always returned.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> L1Loss()(torch.ones(2, 3), torch.zeros(2, 3)).item()
        1.0
    """

    def __init__(
        self, reduction: str = "mean", loss_weight: float = 1.0, teacher_detach: bool = True
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"L1Loss: reduction must be 'mean' or 'sum', got {reduction!r}.")
        self.reduction = reduction

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped ``s_feature`` and ``t_feature``."""
        check_same_shape("L1Loss", s_feature, t_feature)
        return self.loss_weight * F.l1_loss(s_feature, self.detached(t_feature), reduction=self.reduction)
