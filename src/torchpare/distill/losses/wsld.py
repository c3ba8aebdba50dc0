"""Weighted soft label distillation (Zhou et al., ICLR 2021): KD weighted per sample by a bias-variance ratio."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_logits, check_positive
from torchpare.distill.losses._labels import check_labels
from torchpare.registry import LOSSES

__all__ = ["WSLDLoss", "wsld_loss"]


def wsld_loss(
    preds_S: torch.Tensor, preds_T: torch.Tensor, gt_labels: torch.Tensor, tau: float = 2.0
) -> torch.Tensor:
    """``tau^2 * mean_i w_i * CE(softmax(z_T / tau), softmax(z_S / tau))_i`` with
    ``w_i = 1 - exp(-max(CE_S,i / CE_T,i, 0))`` (hard-label CEs at temperature 1, no gradient).

    Args:
        preds_S: Student logits ``(N, C)``.
        preds_T: Teacher logits ``(N, C)``.
        gt_labels: ``(N,)`` int64 class indices.
        tau: Temperature.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> z = torch.randn(3, 4); y = torch.tensor([0, 1, 2])
        >>> wsld_loss(z, z, y).item() > 0  # a cross-entropy, so > 0 even for equal logits
        True
    """
    soft_ce = -(F.softmax(preds_T / tau, dim=1) * F.log_softmax(preds_S / tau, dim=1)).sum(1)
    with torch.no_grad():
        ce_s = F.cross_entropy(preds_S.detach(), gt_labels, reduction="none")
        ce_t = F.cross_entropy(preds_T.detach(), gt_labels, reduction="none")
        weight = 1 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0))
    return (tau**2) * (weight * soft_ce).mean()


@LOSSES.register(aliases=("WSLD", "WSL"))
class WSLDLoss(DistillLoss):
    """WSLD: ``L = loss_weight * tau^2 * mean_i (1 - exp(-CE_S,i / CE_T,i)) * H(p_T,i, p_S,i)``.

    Zhou et al., "Rethinking Soft Labels for Knowledge Distillation: A Bias-Variance Tradeoff
    Perspective" (ICLR 2021); checked against the authors' code (bellymonster/Weighted-Soft-Label-
    Distillation) and MMRazor's ``WSLD``. ``CE_S``/``CE_T`` are the hard-label cross-entropies of student
    and teacher (no gradient); ``H`` is the soft cross-entropy at temperature ``tau``. The paper
    weights it by 2.25 next to the hard-label loss (set ``loss_weight``).

    Args:
        tau: Temperature (2 in the paper).
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``preds_T``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> WSLDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 4])).dim()
        0
    """

    def __init__(self, tau: float = 2.0, loss_weight: float = 1.0, teacher_detach: bool = True) -> None:
        super().__init__(loss_weight, teacher_detach)
        check_positive("WSLDLoss", "tau", tau)
        self.tau = tau

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, C)`` student/teacher logits and ``(N,)`` class indices ``gt_labels``."""
        check_logits("WSLDLoss", preds_S, preds_T)
        gt_labels = check_labels("WSLDLoss", preds_S, gt_labels)
        return self.loss_weight * wsld_loss(preds_S, self.detached(preds_T), gt_labels, self.tau)
