"""Feature-matching distances: L2Loss (sum of squares per sample, optional L2 normalisation) and MSELoss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import check_same_shape
from torchpare.registry import LOSSES

__all__ = ["L2Loss", "MSELoss", "l2_loss"]


def l2_loss(
    s_feature: torch.Tensor,
    t_feature: torch.Tensor,
    normalize: bool = False,
    div_element: bool = False,
    dist: bool = False,
) -> torch.Tensor:
    """``sum((s - t)**2) / N`` (or ``/ numel`` with ``div_element``), optionally on L2-normalised rows.

    Args:
        s_feature: Student features ``(N, ...)``.
        t_feature: Teacher features, same shape.
        normalize: Flatten each sample and divide it by its L2 norm first (scale-free matching).
        div_element: Average over all elements instead of over samples.
        dist: Return the square root (a Euclidean distance rather than its square).

    Example:
        >>> import torch
        >>> l2_loss(torch.ones(2, 3), torch.zeros(2, 3)).item()
        3.0
    """
    if normalize:
        s_feature = F.normalize(s_feature.reshape(s_feature.shape[0], -1), dim=1)
        t_feature = F.normalize(t_feature.reshape(t_feature.shape[0], -1), dim=1)
    loss = (s_feature - t_feature).pow(2).sum()
    loss = loss / (s_feature.numel() if div_element else s_feature.shape[0])
    return loss.sqrt() if dist else loss


@LOSSES.register(aliases=("L2",))
class L2Loss(DistillLoss):
    """Squared L2 distance between features, per sample: ``L = loss_weight * sum ||s_i - t_i||^2 / N``.

    With ``normalize=True`` each sample is flattened and L2-normalised first (as in MMRazor's L2Loss,
    used for feature mimicking, e.g. FitNets-style hints on normalised features).

    Args:
        normalize: L2-normalise each flattened sample before comparing.
        div_element: Divide by the number of elements instead of the batch size.
        dist: Take the square root of the result.
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> L2Loss(normalize=True)(torch.randn(2, 4), torch.randn(2, 4)).dim()
        0
    """

    def __init__(
        self,
        normalize: bool = False,
        div_element: bool = False,
        dist: bool = False,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        self.normalize = normalize
        self.div_element = div_element
        self.dist = dist

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped ``s_feature`` and ``t_feature``."""
        check_same_shape("L2Loss", s_feature, t_feature)
        t_feature = self.detached(t_feature)
        return self.loss_weight * l2_loss(s_feature, t_feature, self.normalize, self.div_element, self.dist)


@LOSSES.register(aliases=("MSE", "FitNets"))
class MSELoss(DistillLoss):
    """Mean squared error ``L = loss_weight * mean((s - t)^2)``; the hint loss of FitNets.

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015) regress the teacher's hint layer
    from the student's guided layer through a regressor (here: :class:`ConvModuleConnector`); the
    reference implementation (RepDistiller ``HintLoss``) uses ``nn.MSELoss()``, hence the alias.

    Args:
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> MSELoss()(torch.ones(2, 3), torch.zeros(2, 3)).item()
        1.0
    """

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss between same-shaped ``s_feature`` and ``t_feature``."""
        check_same_shape("MSELoss", s_feature, t_feature)
        return self.loss_weight * F.mse_loss(s_feature, self.detached(t_feature))
