"""Channel-wise distillation (Shu et al., ICCV 2021): KL between per-channel spatial distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_dims, check_positive, check_same_shape
from torchpare.registry import LOSSES

__all__ = ["ChannelWiseDivergence", "channel_wise_divergence"]


def channel_wise_divergence(
    s_feature: torch.Tensor, t_feature: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """``tau^2 / (N C) * sum_{n,c} KL(softmax(t_nc / tau) || softmax(s_nc / tau))`` over spatial positions.

    Args:
        s_feature: Student map ``(N, C, *spatial)``.
        t_feature: Teacher map, same shape.
        tau: Temperature.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 4)
        >>> channel_wise_divergence(x, x).abs().item() < 1e-6
        True
    """
    n, c = s_feature.shape[:2]
    log_s = F.log_softmax(s_feature.reshape(n * c, -1) / tau, dim=1)
    log_t = F.log_softmax(t_feature.reshape(n * c, -1) / tau, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
    return (tau**2) * kl / (n * c)


@LOSSES.register(aliases=("CWD",))
class ChannelWiseDivergence(DistillLoss):
    """CWD: ``L = loss_weight * tau^2 / (N C) * sum_{n,c} sum_i phi(t_nc)_i log(phi(t_nc)_i / phi(s_nc)_i)``.

    ``phi`` is a softmax over the spatial positions of one channel at temperature ``tau``. Shu et al.,
    "Channel-wise Knowledge Distillation for Dense Prediction" (ICCV 2021); checked against MMRazor's
    ``ChannelWiseDivergence``. Inputs are feature maps or dense logits ``(N, C, *spatial)`` of equal
    shape (map the student's channels with a ``ConvModuleConnector`` first).

    Args:
        tau: Temperature (4 for segmentation in the paper).
        loss_weight: Multiplies the loss (3 for segmentation in the paper).
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> ChannelWiseDivergence(tau=4.0)(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)).dim()
        0
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, teacher_detach: bool = True) -> None:
        super().__init__(loss_weight, teacher_detach)
        check_positive("ChannelWiseDivergence", "tau", tau)
        self.tau = tau

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss for same-shaped ``(N, C, H, W)`` (or ``(N, C, L)``) student/teacher maps."""
        check_same_shape("ChannelWiseDivergence", s_feature, t_feature)
        check_dims("ChannelWiseDivergence", s_feature, (3, 4, 5), "s_feature")
        return self.loss_weight * channel_wise_divergence(s_feature, self.detached(t_feature), self.tau)
