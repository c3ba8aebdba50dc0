"""Relational KD (Park et al., CVPR 2019): match pairwise distances and triplet angles of embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_tensor
from torchpare.registry import LOSSES

__all__ = ["RKDDistance", "RKDAngle", "pairwise_distance", "rkd_distance", "rkd_angle"]


def pairwise_distance(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(N, N)`` Euclidean distances between rows of ``(N, D)`` ``e``, exactly 0 on the diagonal.

    Args:
        e: ``(N, D)`` embeddings.
        eps: Floor under squared distances, so that ``sqrt`` has a finite gradient.

    Returns:
        ``(N, N)`` distances.
    """
    sq = e.pow(2).sum(1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp_min(eps)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def _normalised_distance(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distance(e)
    off = d[d > 0]
    # The paper's mu: mean distance over distinct pairs; clamp guards the all-equal batch.
    return d / off.mean().clamp_min(1e-12) if off.numel() else d


def rkd_distance(s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
    """``smooth_l1(psi_D(S), psi_D(T))`` with ``psi_D = pairwise distance / its mean`` (rows flattened).

    Args:
        s_feature: Student embeddings ``(N, ...)``.
        t_feature: Teacher embeddings ``(N, ...)`` (any size per sample).

    Returns:
        A scalar tensor.

    Example:
        >>> import torch
        >>> e = torch.randn(5, 3)
        >>> rkd_distance(e, 2 * e).abs().item() < 1e-6  # invariant to scale
        True
    """
    s = s_feature.reshape(s_feature.shape[0], -1)
    t = t_feature.reshape(t_feature.shape[0], -1)
    return F.smooth_l1_loss(_normalised_distance(s), _normalised_distance(t))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_angle(s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
    """``smooth_l1(cos angle(e_i, e_j, e_k) of S, of T)`` over all triplets (rows flattened).

    Args:
        s_feature: Student embeddings ``(N, ...)``.
        t_feature: Teacher embeddings ``(N, ...)`` (any size per sample).

    Returns:
        A scalar tensor (memory grows as ``N^3``).

    Example:
        >>> import torch
        >>> e = torch.randn(4, 3)
        >>> rkd_angle(e, 3 * e + 1).abs().item() < 1e-6  # invariant to scale and shift
        True
    """
    s = s_feature.reshape(s_feature.shape[0], -1)
    t = t_feature.reshape(t_feature.shape[0], -1)
    return F.smooth_l1_loss(_angles(s), _angles(t))


def _check_pair(who: str, s: torch.Tensor, t: torch.Tensor) -> None:
    check_tensor(who, "s_feature", s)
    check_tensor(who, "t_feature", t)
    if s.dim() < 2 or t.dim() < 2 or s.shape[0] != t.shape[0] or s.shape[0] < 2:
        raise LossShapeError(
            f"{who}: s_feature has shape {tuple(s.shape)} but t_feature has shape {tuple(t.shape)}; "
            "both need the same batch size (>= 2) in dim 0; feature sizes may differ."
        )


class _RKDLoss(DistillLoss):
    """What both RKD losses do around their relation function: check, detach the teacher, weight."""

    _relation: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def forward(self, s_feature: torch.Tensor, t_feature: torch.Tensor) -> torch.Tensor:
        """Loss for ``(N, D_s)`` and ``(N, D_t)`` embeddings (extra dims are flattened)."""
        _check_pair(type(self).__name__, s_feature, t_feature)
        return self.loss_weight * self._relation(s_feature, self.detached(t_feature))


@LOSSES.register(aliases=("RKD-D", "RKDD"))
class RKDDistance(_RKDLoss):
    """Distance-wise RKD: ``L = loss_weight * mean_{i,j} l_delta(d_S,ij / mu_S, d_T,ij / mu_T)``.

    Park et al., "Relational Knowledge Distillation" (CVPR 2019); checked against lenscloth/RKD.
    ``d_ij = ||e_i - e_j||_2``, ``mu`` the mean over distinct pairs, ``l_delta`` the Huber (smooth L1)
    loss. Student and teacher embeddings may have different sizes. The paper uses weight 25.

    Args:
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> RKDDistance()(torch.randn(4, 8), torch.randn(4, 16)).dim()
        0
    """

    _relation = staticmethod(rkd_distance)


@LOSSES.register(aliases=("RKD-A", "RKDA"))
class RKDAngle(_RKDLoss):
    """Angle-wise RKD: ``L = loss_weight * mean_{i,j,k} l_delta(cos angle_S,ijk, cos angle_T,ijk)``.

    ``cos angle_ijk = <unit(e_i - e_j), unit(e_k - e_j)>``. Park et al., "Relational Knowledge
    Distillation" (CVPR 2019); checked against lenscloth/RKD. The paper uses weight 50.

    Args:
        loss_weight: Multiplies the loss.
        teacher_detach: Stop gradients into ``t_feature``.

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> RKDAngle()(torch.randn(4, 8), torch.randn(4, 16)).dim()
        0
    """

    _relation = staticmethod(rkd_angle)
