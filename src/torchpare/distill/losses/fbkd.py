"""Feature-based KD for detectors (Zhang & Ma, ICLR 2021): attention-masked feature loss + non-local relations."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_dims, check_same_shape
from torchpare.registry import LOSSES

__all__ = ["FBKDLoss", "NonLocal2d", "spatial_attention"]


class NonLocal2d(nn.Module):
    """Dot-product non-local block ``x + BN(W_z (theta(x) phi(x)^T / HW) g(x))`` (Wang et al., CVPR 2018).

    ``BN`` starts at zero so the block starts as the identity (as mmcv's ``zeros_init``).
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inter = max(channels // reduction, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.conv_out = nn.Conv2d(inter, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        theta_x = self.theta(x).flatten(2).transpose(1, 2)
        phi_x = self.phi(x).flatten(2)  # (N, C', HW)
        pairwise = theta_x @ phi_x / (h * w)
        y = (pairwise @ g_x).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.norm(self.conv_out(y))


def spatial_attention(x: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """``H W * softmax(mean_c |x| / T)`` over positions (mean 1 per sample).

    Args:
        x: ``(N, C, H, W)`` feature map.
        temperature: Softmax temperature (< 1 sharpens).

    Returns:
        ``(N, 1, H, W)`` attention.
    """
    n, _, h, w = x.shape
    a = x.abs().mean(1).reshape(n, -1)
    return (torch.softmax(a / temperature, dim=1) * (h * w)).reshape(n, 1, h, w)


@LOSSES.register(aliases=("FBKD",))
class FBKDLoss(DistillLoss):
    """FBKD: attention-guided and non-local distillation for feature maps of equal shape.

    Zhang & Ma, "Improve Object Detection with Feature-based Knowledge Distillation: Towards Accurate
    and Efficient Detectors" (ICLR 2021); checked against MMRazor's ``FBKDLoss`` and FBKD connectors.
    With ``M = (A_S + A_T) / 2`` the (detached) mean spatial attention of both sides::

        L = loss_weight * ( w_mask * sqrt(sum M (T - adapt(S))^2)
                          + w_channel * ||mean_hw T - lin(mean_hw S)||_2
                          + w_spatial * ||mean_c T - conv3x3(mean_c S)||_2
                          + w_nonlocal * ||NL_T(T) - conv1x1(NL_S(S))||_2 )

    The student adaptation layers and both non-local blocks belong to the loss (as the embedding
    heads of CRD), so they train with the student and are saved with the distiller. The channel-wise
    mask of the paper is not used by the authors' loss and is left out.

    Args:
        in_channels: Channels of both feature maps (map the student first if they differ).
        reduction: Non-local channel reduction.
        spatial_t: Temperature of the spatial attention.
        mask_l2_weight: Weight of the mask L2 term (the authors' value).
        channel_weight: Weight of the channel-attention term (the authors' value).
        spatial_weight: Weight of the spatial-attention term (the authors' value).
        nonlocal_weight: Weight of the non-local term (the authors' value).
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> FBKDLoss(4)(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)).dim()
        0
    """

    def __init__(
        self,
        in_channels: int,
        reduction: int = 2,
        spatial_t: float = 0.5,
        mask_l2_weight: float = 7e-5,
        channel_weight: float = 4e-3,
        spatial_weight: float = 4e-3,
        nonlocal_weight: float = 7e-5,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.in_channels = in_channels
        self.spatial_t = spatial_t
        self.weights = (mask_l2_weight, channel_weight, spatial_weight, nonlocal_weight)
        self.adaptation = nn.Conv2d(in_channels, in_channels, 1)
        self.channel_adaptation = nn.Linear(in_channels, in_channels)
        self.spatial_adaptation = nn.Conv2d(1, 1, 3, padding=1)
        self.student_non_local = NonLocal2d(in_channels, reduction)
        self.teacher_non_local = NonLocal2d(in_channels, reduction)
        self.non_local_adaptation = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss for same-shaped ``(N, in_channels, H, W)`` student and teacher maps."""
        check_dims("FBKDLoss", s_feature, 4, "s_feature")
        check_same_shape("FBKDLoss", s_feature, t_feature)
        if s_feature.shape[1] != self.in_channels:
            raise LossShapeError(
                f"FBKDLoss(in_channels={self.in_channels}): s_feature has shape {tuple(s_feature.shape)} and "
                f"t_feature has shape {tuple(t_feature.shape)}; set in_channels={s_feature.shape[1]}."
            )
        t_feature = self.detached(t_feature)
        w_mask, w_channel, w_spatial, w_nonlocal = self.weights
        mask = (
            (spatial_attention(s_feature, self.spatial_t) + spatial_attention(t_feature, self.spatial_t)) / 2
        ).detach()
        feat = ((t_feature - self.adaptation(s_feature)).pow(2) * mask).sum().sqrt()
        channel = torch.dist(t_feature.mean((2, 3)), self.channel_adaptation(s_feature.mean((2, 3))))
        spatial = torch.dist(
            t_feature.mean(1, keepdim=True), self.spatial_adaptation(s_feature.mean(1, keepdim=True))
        )
        relation = torch.dist(
            self.teacher_non_local(t_feature), self.non_local_adaptation(self.student_non_local(s_feature))
        )
        loss = w_mask * feat + w_channel * channel + w_spatial * spatial + w_nonlocal * relation
        return self.loss_weight * loss
