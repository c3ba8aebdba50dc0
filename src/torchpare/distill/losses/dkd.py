"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): target-class and non-target-class KD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_logits, check_positive
from torchpare.distill.losses._labels import check_labels
from torchpare.registry import LOSSES

__all__ = ["DKDLoss", "dkd_loss", "dkd_parts"]

# Logit offset that removes the target class from the non-target softmax (authors' value; finite so that
# 0 * log(0)-style terms never become NaN).
_MASK_OFFSET = 1000.0


def dkd_parts(
    preds_S: torch.Tensor, preds_T: torch.Tensor, gt_labels: torch.Tensor, tau: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(TCKD, NCKD)``, each multiplied by ``tau**2``.

    TCKD is the KL between the binary distributions ``b = [p_t, 1 - p_t]`` of teacher and student;
    NCKD the KL between the distributions over the non-target classes ``p_hat``. The paper's identity
    ``KD = TCKD + (1 - p_t^T) * NCKD`` holds per sample (tested).

    Args:
        preds_S: Student logits ``(N, C)``.
        preds_T: Teacher logits ``(N, C)``.
        gt_labels: ``(N,)`` int64 class indices.
        tau: Temperature.

    Returns:
        Two ``(N,)`` tensors.
    """
    z_s, z_t = preds_S / tau, preds_T / tau
    gt_mask = F.one_hot(gt_labels, z_s.shape[1]).to(torch.bool)
    lse_s, lse_t = z_s.logsumexp(1), z_t.logsumexp(1)
    # log b = [log p_t, log(1 - p_t)], via log-sum-exps (stable where p_t ~ 1).
    off_s = z_s.masked_fill(gt_mask, float("-inf")).logsumexp(1)
    off_t = z_t.masked_fill(gt_mask, float("-inf")).logsumexp(1)
    target = gt_labels.unsqueeze(1)
    log_b_s = torch.stack([z_s.gather(1, target).squeeze(1) - lse_s, off_s - lse_s], dim=1)
    log_b_t = torch.stack([z_t.gather(1, target).squeeze(1) - lse_t, off_t - lse_t], dim=1)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(1)
    log_q_s = F.log_softmax(z_s - _MASK_OFFSET * gt_mask, dim=1)
    log_q_t = F.log_softmax(z_t - _MASK_OFFSET * gt_mask, dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(gt_mask, 0.0).sum(1)
    return (tau**2) * tckd, (tau**2) * nckd


def dkd_loss(
    preds_S: torch.Tensor,
    preds_T: torch.Tensor,
    gt_labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    tau: float = 4.0,
) -> torch.Tensor:
    """``mean_i(alpha * TCKD_i + beta * NCKD_i)`` (see :func:`dkd_parts`; both carry ``tau**2``).

    Args:
        preds_S: Student logits ``(N, C)``.
        preds_T: Teacher logits ``(N, C)``.
        gt_labels: ``(N,)`` int64 class indices.
        alpha: TCKD weight.
        beta: NCKD weight.
        tau: Temperature.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 5); y = torch.tensor([0, 1, 2, 3])
        >>> dkd_loss(z, z, y).abs().item() < 1e-6  # identical logits: no loss
        True
    """
    tckd, nckd = dkd_parts(preds_S, preds_T, gt_labels, tau)
    return (alpha * tckd + beta * nckd).mean()


@LOSSES.register(aliases=("DKD",))
class DKDLoss(DistillLoss):
    """Decoupled KD: ``L = loss_weight * tau^2 * mean_i(alpha * TCKD_i + beta * NCKD_i)``.

    Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022); checked against
    megvii-research/mdistiller ``dkd_loss``. With ``b = [p_t, 1 - p_t]`` (target vs. all other classes)
    and ``p_hat`` the softmax over the non-target classes (all at temperature ``tau``):
    ``TCKD = KL(b^T || b^S)``, ``NCKD = KL(p_hat^T || p_hat^S)``. Classic KD equals
    ``TCKD + (1 - p_t^T) NCKD``; DKD frees NCKD's weight from ``1 - p_t^T``. The paper's warm-up of the
    loss weight over the first epochs is a schedule, left to the training loop.

    Args:
        tau: Temperature.
        alpha: TCKD weight.
        beta: NCKD weight (8 on CIFAR-100 in the paper).
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``preds_T``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> DKDLoss()(torch.randn(2, 10), torch.randn(2, 10), torch.tensor([1, 7])).dim()
        0
    """

    def __init__(
        self,
        tau: float = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        check_positive("DKDLoss", "tau", tau)
        self.tau = tau
        self.alpha = alpha
        self.beta = beta

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, C)`` student/teacher logits and ``(N,)`` class indices ``gt_labels``."""
        check_logits("DKDLoss", preds_S, preds_T)
        gt_labels = check_labels("DKDLoss", preds_S, gt_labels)
        preds_T = self.detached(preds_T)
        return self.loss_weight * dkd_loss(preds_S, preds_T, gt_labels, self.alpha, self.beta, self.tau)
