"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match normalised spatial attention maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_dims, check_dims_match
from torchpare.registry import LOSSES

__all__ = ["ATLoss", "attention_map", "at_loss"]


def attention_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``normalize(mean_c |x_c|^p)``, flattened to ``(N, H*W)`` (one unit-norm map per sample).

    Args:
        x: Feature map ``(N, C, *spatial)``.
        p: Power on the activations.

    Returns:
        ``(N, prod(spatial))`` attention maps of unit L2 norm.
    """
    return F.normalize(x.abs().pow(p).mean(1).reshape(x.shape[0], -1), dim=1)


def at_loss(s_feature: torch.Tensor, t_feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``mean((Q_S - Q_T)^2)`` with ``Q = attention_map(x, p)``.

    Args:
        s_feature: Student map ``(N, C_s, *spatial)``.
        t_feature: Teacher map ``(N, C_t, *spatial)``.
        p: Power on the activations.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 4)
        >>> at_loss(x, 5 * x).abs().item() < 1e-6  # scale-free
        True
    """
    return (attention_map(s_feature, p) - attention_map(t_feature, p)).pow(2).mean()


@LOSSES.register(aliases=("AT",))
class ATLoss(DistillLoss):
    """Attention transfer: ``L = loss_weight * mean_{n,j} (Q_S,nj - Q_T,nj)^2``,
    ``Q = vec(mean_c |A_c|^p) / ||vec(mean_c |A_c|^p)||_2``.

    Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017); checked against
    RepDistiller's ``Attention`` and MMRazor's ``ATLoss``. Student and teacher may differ in channels
    but must agree on batch and spatial size. The paper's weight is ``beta = 1000`` (set ``loss_weight``).

    Args:
        p: Power on the activations (2 in the paper).
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> ATLoss()(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4)).dim()
        0
    """

    def __init__(self, p: float = 2.0, loss_weight: float = 1.0, teacher_detach: bool = True) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.p = p

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, C_s, H, W)`` and ``(N, C_t, H, W)`` feature maps."""
        check_dims("ATLoss", s_feature, (3, 4, 5), "s_feature")
        dims = [0, *range(2, s_feature.dim())]
        check_dims_match("ATLoss", s_feature, t_feature, dims, what="batch and spatial")
        return self.loss_weight * at_loss(s_feature, self.detached(t_feature), self.p)
