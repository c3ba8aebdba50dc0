"""PKD (Cao et al., NeurIPS 2022): MSE between channel-standardised features = 1 - Pearson correlation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_dims, check_dims_match
from torchpare.registry import LOSSES

__all__ = ["PKDLoss", "pkd_loss", "standardize_channels"]


def standardize_channels(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per channel, subtract the mean and divide by the (unbiased) std over batch and space.

    Args:
        x: ``(N, C, *spatial)`` features.
        eps: Added to the std.

    Returns:
        A tensor shaped like ``x``.
    """
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + eps)
    return flat.reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)


def pkd_loss(s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
    """``mse(standardize(s), standardize(t)) / 2`` for one same-shaped pair.

    Args:
        s_feature: Student map ``(N, C, H, W)``.
        t_feature: Teacher map, same shape.

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4, 4)
        >>> pkd_loss(x, 2 * x + 1).abs().item() < 1e-6  # invariant to per-channel affine maps
        True
    """
    return F.mse_loss(standardize_channels(s_feature), standardize_channels(t_feature)) / 2


@LOSSES.register(aliases=("PKD",))
class PKDLoss(DistillLoss):
    """PKD: ``L = loss_weight * sum_levels mse(z(S), z(T)) / 2``, ``z`` = per-channel standardisation.

    Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson Correlation
    Coefficient" (NeurIPS 2022); checked against MMRazor's ``pkd_loss``. Per channel this equals
    ``1 - r`` (Pearson r over batch and space, up to the n/(n-1) std factor). Inputs may be one tensor or a
    sequence of FPN levels; a spatial mismatch is fixed by bilinear resizing of the student (or
    teacher with ``resize_stu=False``); channels must agree.

    Args:
        resize_stu: Resize the student to the teacher's spatial size (else the teacher to the student's).
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> PKDLoss()(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)).dim()
        0
    """

    def __init__(
        self, resize_stu: bool = True, loss_weight: float = 1.0, teacher_detach: bool = True
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.resize_stu = resize_stu

    def forward(
        self,
        s_feature: torch.Tensor | Sequence[torch.Tensor],
        t_feature: torch.Tensor | Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Loss for ``(N, C, H, W)`` maps, or equal-length sequences of them."""
        pairs_s = (s_feature,) if isinstance(s_feature, torch.Tensor) else tuple(s_feature)
        pairs_t = (t_feature,) if isinstance(t_feature, torch.Tensor) else tuple(t_feature)
        if len(pairs_s) != len(pairs_t):
            raise LossShapeError(
                f"PKDLoss: s_feature has {len(pairs_s)} levels but t_feature has {len(pairs_t)}; "
                "record the same number of feature levels on both sides."
            )
        loss = None
        for s, t in zip(pairs_s, pairs_t):
            check_dims("PKDLoss", s, 4, "s_feature")
            check_dims("PKDLoss", t, 4, "t_feature")
            check_dims_match(
                "PKDLoss",
                s,
                t,
                (0, 1),
                what="batch and channel",
                hint="map the student's channels with a ConvModuleConnector",
            )
            t = self.detached(t)
            if s.shape[2:] != t.shape[2:]:
                if self.resize_stu:
                    s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
                else:
                    t = F.interpolate(t, size=s.shape[2:], mode="bilinear", align_corners=False)
            term = pkd_loss(s, t)
            loss = term if loss is None else loss + term
        if loss is None:
            raise LossShapeError(
                "PKDLoss: s_feature and t_feature are empty sequences; pass at least one map."
            )
        return self.loss_weight * loss
