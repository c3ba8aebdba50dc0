"""DIST (Huang et al., NeurIPS 2022): match inter- and intra-class Pearson correlations of predictions."""

from __future__ import annotations

import torch

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_logits
from torchpare.registry import LOSSES

__all__ = ["DISTLoss", "dist_loss", "pearson_correlation"]


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of two ``(N, D)`` tensors.

    Args:
        a: ``(N, D)`` tensor.
        b: ``(N, D)`` tensor.
        eps: Added to the product of norms (constant rows give 0, not NaN).

    Returns:
        ``(N,)`` correlations.
    """
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    preds_S: torch.Tensor, preds_T: torch.Tensor, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0
) -> torch.Tensor:
    """``tau^2 * (beta * (1 - mean_i rho(y_i^S, y_i^T)) + gamma * (1 - mean_c rho(y_:c^S, y_:c^T)))``.

    ``y = softmax(z / tau)``; the first term compares each sample's class ranking (inter-class), the
    second each class's ranking over the batch (intra-class).

    Args:
        preds_S: Student logits ``(N, C)``, ``N >= 2``.
        preds_T: Teacher logits ``(N, C)``.
        beta: Inter-class weight.
        gamma: Intra-class weight.
        tau: Temperature.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 6)
        >>> dist_loss(z, 2 * z + 0).item() >= 0
        True
    """
    y_s = (preds_S / tau).softmax(dim=1)
    y_t = (preds_T / tau).softmax(dim=1)
    inter = 1 - pearson_correlation(y_s, y_t).mean()
    intra = 1 - pearson_correlation(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return (tau**2) * (beta * inter + gamma * intra)


@LOSSES.register(aliases=("DIST",))
class DISTLoss(DistillLoss):
    """DIST: ``L = loss_weight * tau^2 * (beta * L_inter + gamma * L_intra)``, ``L = 1 - Pearson r``.

    Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022); checked against
    hunto/DIST_KD. Needs a batch of at least 2 samples (the intra-class term correlates over the batch).

    Args:
        beta: Inter-class relation weight.
        gamma: Intra-class relation weight.
        tau: Temperature.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``preds_T``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> DISTLoss()(torch.randn(4, 10), torch.randn(4, 10)).dim()
        0
    """

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.beta = beta
        self.gamma = gamma
        self.tau = tau

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, C)`` student/teacher logits, ``N >= 2``."""
        check_logits("DISTLoss", preds_S, preds_T)
        if preds_S.shape[0] < 2:
            raise LossShapeError(
                f"DISTLoss: preds_S has shape {tuple(preds_S.shape)}; the intra-class term needs a batch "
                "of at least 2 samples."
            )
        return self.loss_weight * dist_loss(preds_S, self.detached(preds_T), self.beta, self.gamma, self.tau)
