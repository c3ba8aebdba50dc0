"""Masked generative distillation (Yang et al., ECCV 2022): regenerate teacher features from masked student ones."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_dims, check_dims_match, check_same_shape
from torchpare.registry import LOSSES

__all__ = ["MGDLoss", "random_mask"]


def random_mask(x: torch.Tensor, lambda_mgd: float, mask_on_channel: bool = False) -> torch.Tensor:
    """A 0/1 mask broadcastable to ``x`` ``(N, C, H, W)``: each position (or channel) is 0 w.p. ``lambda_mgd``.

    Args:
        x: The feature map (gives shape, device and dtype).
        lambda_mgd: Probability of masking.
        mask_on_channel: Mask ``(N, C, 1, 1)`` channels instead of ``(N, 1, H, W)`` positions.

    Returns:
        The mask, drawn from the global torch RNG.
    """
    n, c, h, w = x.shape
    shape = (n, c, 1, 1) if mask_on_channel else (n, 1, h, w)
    keep = torch.rand(shape, device=x.device) <= 1 - lambda_mgd
    return keep.to(x.dtype)


@LOSSES.register(aliases=("MGD",))
class MGDLoss(DistillLoss):
    """MGD: ``L = loss_weight * alpha_mgd * sum (G(f_align(S) * M) - T)^2 / N``.

    Yang et al., "Masked Generative Distillation" (ECCV 2022); checked against yzd-v/MGD. ``M`` drops
    each spatial position (or channel) with probability ``lambda_mgd``; ``G`` is a 3x3 conv, ReLU,
    3x3 conv generator and ``f_align`` a 1x1 conv when channels differ. As in the authors' code, the
    align and generation layers belong to the loss (they train with the student and are saved with the
    distiller). With ``student_channels=None`` there is no generator: the loss is the plain scaled
    squared distance (MMRazor's split, where a connector did the generation).

    Args:
        student_channels: Student channels (``None``: no align/generation layers).
        teacher_channels: Teacher channels (defaults to ``student_channels``).
        alpha_mgd: Loss scale (2e-5 for detection in the paper).
        lambda_mgd: Masking ratio.
        mask_on_channel: Mask whole channels instead of spatial positions.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> MGDLoss(4, 8)(torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5)).dim()
        0
    """

    def __init__(
        self,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        alpha_mgd: float = 2e-5,
        lambda_mgd: float = 0.65,
        mask_on_channel: bool = False,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        if not 0.0 <= lambda_mgd < 1.0:
            raise ValueError(f"MGDLoss: lambda_mgd must be in [0, 1), got {lambda_mgd}.")
        self.alpha_mgd = alpha_mgd
        self.lambda_mgd = lambda_mgd
        self.mask_on_channel = mask_on_channel
        self.student_channels = student_channels
        self.align: nn.Module | None = None
        self.generation: nn.Module | None = None
        if student_channels is not None:
            t_ch = teacher_channels or student_channels
            if student_channels != t_ch:
                self.align = nn.Conv2d(student_channels, t_ch, kernel_size=1)
            self.generation = nn.Sequential(
                nn.Conv2d(t_ch, t_ch, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(t_ch, t_ch, kernel_size=3, padding=1),
            )

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, C_s, H, W)`` student and ``(N, C_t, H, W)`` teacher maps."""
        check_dims("MGDLoss", s_feature, 4, "s_feature")
        check_dims("MGDLoss", t_feature, 4, "t_feature")
        t_feature = self.detached(t_feature)
        if self.generation is not None:
            if s_feature.shape[1] != self.student_channels:
                raise LossShapeError(
                    f"MGDLoss(student_channels={self.student_channels}): s_feature has shape "
                    f"{tuple(s_feature.shape)} and t_feature has shape {tuple(t_feature.shape)}; "
                    f"set student_channels={s_feature.shape[1]}."
                )
            check_dims_match("MGDLoss", s_feature, t_feature, (0, 2, 3), what="batch and spatial")
            if self.align is not None:
                s_feature = self.align(s_feature)
            s_feature = self.generation(
                s_feature * random_mask(s_feature, self.lambda_mgd, self.mask_on_channel)
            )
        check_same_shape(
            "MGDLoss",
            s_feature,
            t_feature,
            hint="set student_channels/teacher_channels so the loss aligns channels",
        )
        loss = (s_feature - t_feature).pow(2).sum() / s_feature.shape[0]
        return self.loss_weight * self.alpha_mgd * loss
