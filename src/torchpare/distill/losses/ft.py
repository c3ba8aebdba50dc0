"""Factor transfer (Kim et al., NeurIPS 2018): L1 between L2-normalised factors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_same_shape
from torchpare.registry import LOSSES

__all__ = ["FTLoss", "ft_loss"]


def ft_loss(s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
    """``mean |F_S / ||F_S||_2 - F_T / ||F_T||_2|`` with each sample flattened.

    Args:
        s_feature: Student factor ``(N, ...)``.
        t_feature: Teacher factor, same shape.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 4)
        >>> ft_loss(x, 3 * x).abs().item() < 1e-6
        True
    """
    n = s_feature.shape[0]
    f_s = F.normalize(s_feature.reshape(n, -1), dim=1)
    f_t = F.normalize(t_feature.reshape(n, -1), dim=1)
    return (f_s - f_t).abs().mean()


@LOSSES.register(aliases=("FT", "FactorTransfer"))
class FTLoss(DistillLoss):
    """Factor transfer: ``L = loss_weight * mean | F_S/||F_S||_2 - F_T/||F_T||_2 |`` (p = 1).

    Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer" (NeurIPS 2018);
    checked against MMRazor's ``FTLoss``. ``s_feature`` is the student's translator output and
    ``t_feature`` the teacher's paraphraser factor (both :class:`~torchpare.distill.connectors.FTConnector`).

    Args:
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature`` (the paraphraser is pre-trained, then frozen).

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> FTLoss()(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)).dim()
        0
    """

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped student and teacher factors."""
        check_same_shape("FTLoss", s_feature, t_feature)
        return self.loss_weight * ft_loss(s_feature, self.detached(t_feature))
