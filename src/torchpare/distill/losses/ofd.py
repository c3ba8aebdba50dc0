"""Overhaul of feature distillation (Heo et al., ICCV 2019): partial L2 on pre-ReLU features."""

from __future__ import annotations

import torch

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_same_shape
from torchpare.registry import LOSSES

__all__ = ["OFDLoss", "ofd_loss"]


def ofd_loss(s_feature: torch.Tensor, t_feature: torch.Tensor, mul_factor: float = 1000.0) -> torch.Tensor:
    """Partial L2: ``sum((s - t)^2 * [(s > t) or (t > 0)]) / N / mul_factor``.

    Positions where the (margin-clipped) teacher is negative and the student is already below it
    are skipped: after the ReLU both would be 0 anyway.

    Args:
        s_feature: Student pre-ReLU features (after the connector) ``(N, ...)``.
        t_feature: Margin-clipped teacher pre-ReLU features, same shape.
        mul_factor: Divisor of the summed loss.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> s = torch.tensor([[-3.0, 1.0]]); t = torch.tensor([[-1.0, 0.0]])
        >>> ofd_loss(s, t, mul_factor=1.0).item()  # first position skipped (s < t < 0)
        1.0
    """
    mask = (s_feature > t_feature) | (t_feature > 0)
    loss = (s_feature - t_feature).pow(2) * mask.to(s_feature.dtype)
    return loss.sum() / s_feature.shape[0] / mul_factor


@LOSSES.register(aliases=("OFD",))
class OFDLoss(DistillLoss):
    """``L = loss_weight * sum_i,c,h,w (s - t)^2 * 1[(s > t) or (t > 0)] / N / mul_factor``.

    Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019). ``s_feature`` is the
    student's pre-ReLU feature after a 1x1 conv + BN connector (``ConvModuleConnector(norm="BN")``);
    ``t_feature`` is the teacher's pre-ReLU feature clipped at its margin by
    :class:`~torchpare.distill.connectors.OFDTeacherConnector` (``max(t, margin)``). ``mul_factor``
    is the authors' divisor (1000 on CIFAR, 10000 on ImageNet).

    Args:
        mul_factor: Divides the summed loss.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> OFDLoss()(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)).dim()
        0
    """

    def __init__(
        self, mul_factor: float = 1000.0, loss_weight: float = 1.0, teacher_detach: bool = True
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.mul_factor = mul_factor

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped ``s_feature`` and margin-clipped ``t_feature``."""
        check_same_shape("OFDLoss", s_feature, t_feature)
        return self.loss_weight * ofd_loss(s_feature, self.detached(t_feature), self.mul_factor)
