"""Knowledge distillation with temperature (Hinton et al., 2015): KL between softened class distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_logits, check_positive
from torchpare.registry import LOSSES

__all__ = ["KLDivergence", "kl_divergence"]

_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def kl_divergence(
    preds_S: torch.Tensor, preds_T: torch.Tensor, tau: float = 1.0, reduction: str = "batchmean"
) -> torch.Tensor:
    """``tau**2 * KL(softmax(preds_T / tau) || softmax(preds_S / tau))`` over the class dim (dim 1).

    Args:
        preds_S: Student logits ``(N, C, ...)``.
        preds_T: Teacher logits, same shape.
        tau: Temperature; the ``tau**2`` factor keeps gradient magnitudes comparable across ``tau``.
        reduction: ``"batchmean"`` (sum / N, the true KL per sample), ``"sum"``, ``"mean"`` (per element)
            or ``"none"`` (elementwise).

    Returns:
        The loss (a scalar unless ``reduction="none"``).

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.0, 0.0]]); q = torch.tensor([[0.0, 2.0 * torch.log(torch.tensor(3.0))]])
        >>> round(kl_divergence(p, q, tau=2.0).item(), 4)  # 4 * KL([1/4, 3/4] || [1/2, 1/2])
        0.5232
    """
    log_p_s = F.log_softmax(preds_S / tau, dim=1)
    log_p_t = F.log_softmax(preds_T / tau, dim=1)
    loss = log_p_t.exp() * (log_p_t - log_p_s)
    if reduction == "batchmean":
        loss = loss.sum() / loss.shape[0]
    elif reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.mean()
    return (tau**2) * loss


@LOSSES.register(aliases=("KD", "KL"))
class KLDivergence(DistillLoss):
    """Soft-target KD loss of Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    ``L = loss_weight * tau^2 * sum_c p_T(c) * (log p_T(c) - log p_S(c))``, with ``p = softmax(z / tau)``
    over dim 1, reduced per ``reduction`` (``"batchmean"`` divides by the batch size).

    Args:
        tau: Temperature (> 0).
        reduction: ``"batchmean"`` (default), ``"sum"``, ``"mean"`` or ``"none"``.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into the teacher logits (the paper trains the student only).

    Raises:
        ValueError: bad ``tau`` or ``reduction``.
        LossShapeError: (in ``forward``) preds_S and preds_T of different shapes; the message names both.

    Example:
        >>> import torch
        >>> loss = KLDivergence(tau=4.0)
        >>> loss(torch.randn(2, 10), torch.randn(2, 10)).shape
        torch.Size([])
    """

    def __init__(
        self,
        tau: float = 1.0,
        reduction: str = "batchmean",
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        check_positive("KLDivergence", "tau", tau)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"KLDivergence: reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.tau = tau
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        """Loss between student logits ``preds_S`` and teacher logits ``preds_T`` (same shape, >= 2-D)."""
        check_logits("KLDivergence", preds_S, preds_T, range(2, 9), _LOGIT_HINT)
        return self.loss_weight * kl_divergence(preds_S, self.detached(preds_T), self.tau, self.reduction)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, reduction={self.reduction!r}, loss_weight={self.loss_weight}"


_LOGIT_HINT = "logits must have the same number of classes (map the student with a LinearConnector)"
