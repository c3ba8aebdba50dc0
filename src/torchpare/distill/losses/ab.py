"""Activation-boundary distillation (Heo et al., AAAI 2019): a hinge on the sign of teacher pre-activations."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.distill.losses._checks import check_same_shape
from torchpare.registry import LOSSES

__all__ = ["ABLoss", "ab_loss"]


def ab_loss(s_feature: torch.Tensor, t_feature: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """``sum((s + m)^2 [s > -m, t <= 0] + (s - m)^2 [s <= m, t > 0]) / N / 1000 * 3``.

    Args:
        s_feature: Student pre-ReLU features ``(N, ...)``.
        t_feature: Teacher pre-ReLU features, same shape (only the sign is used).
        margin: Hinge margin ``m``.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> s = torch.tensor([[0.0, 2.0]]); t = torch.tensor([[1.0, 1.0]])
        >>> round(ab_loss(s, t).item() * 1000 / 3, 6)  # (0 - 1)^2 for unit 1; unit 2 is past the margin
        1.0
    """
    dtype = s_feature.dtype
    neg = ((s_feature > -margin) & (t_feature <= 0)).to(dtype)
    pos = ((s_feature <= margin) & (t_feature > 0)).to(dtype)
    loss = (s_feature + margin).pow(2) * neg + (s_feature - margin).pow(2) * pos
    # The authors' scaling: per sample, then / 1000 * 3.
    return loss.sum() / s_feature.shape[0] / 1000 * 3


@LOSSES.register(aliases=("AB",))
class ABLoss(nn.Module):
    """Activation boundaries: ``L = loss_weight * 3/1000/N * sum rho(t) (s - m)^2_{s<=m}
    + (1 - rho(t)) (s + m)^2_{s>-m}``, ``rho(t) = 1[t > 0]``.

    Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons"
    (AAAI 2019); checked against MMRazor's ``ABLoss``. Both inputs are *pre-ReLU* features; the student
    side goes through an :class:`~torchpare.distill.connectors.ABConnector`.

    Args:
        margin: The hinge margin ``m`` (1.0 in the paper).
        loss_weight: Multiplies the loss.

    ``t_feature`` enters only through its sign, so no gradient ever reaches it (no ``teacher_detach``).

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> ABLoss()(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)).dim()
        0
    """

    def __init__(self, margin: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.margin = margin
        self.loss_weight = loss_weight

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped pre-ReLU student and teacher features."""
        check_same_shape("ABLoss", s_feature, t_feature)
        return self.loss_weight * ab_loss(s_feature, t_feature, self.margin)
