"""Contrastive representation distillation (Tian et al., ICLR 2020) with its NCE memory bank."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchpare.distill.losses._base import DistillLoss
from torchpare.distill.losses._checks import LossShapeError, check_tensor
from torchpare.registry import LOSSES

__all__ = ["CRDLoss", "nce_loss"]


def nce_loss(scores: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE loss of ``(N, K+1)`` positive-first scores against a uniform noise over ``num_data`` items.

    ``-(sum_i log P_i0 / (P_i0 + K/n) + sum_{i,k>0} log (K/n) / (P_ik + K/n)) / N``.

    Args:
        scores: ``(N, K+1)`` normalised scores, positive in column 0.
        num_data: Size of the memory bank (the noise distribution is uniform over it).
        eps: Guards the divisions.

    Returns:
        A scalar tensor.
    """
    k = scores.shape[1] - 1
    noise = k / float(num_data)
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class _Embed(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.reshape(x.shape[0], -1)), dim=1)


@LOSSES.register(aliases=("CRD",))
class CRDLoss(DistillLoss):
    """CRD: NCE between student and teacher embeddings, negatives drawn from a momentum memory bank.

    Tian et al., "Contrastive Representation Distillation" (ICLR 2020); checked against
    HobbitLong/RepDistiller (``CRDLoss``, ``ContrastMemory``, ``ContrastLoss``). Embeddings
    ``v = normalize(W f)`` (the heads ``embed_s``/``embed_t`` are part of this loss and train with it);
    scores ``h(v, m) = exp(<v, m> / nce_t) / Z`` against ``nce_k`` memory entries of the *other* side
    (``Z`` fixed at the first call, as in the reference); ``L = loss_weight * (NCE(h_S) + NCE(h_T))``.
    In training mode the memory rows ``idx`` are updated with momentum ``nce_m`` and re-normalised.

    Args:
        num_data: Number of training samples (the memory bank has one row per sample).
        s_dim: Student feature size (flattened).
        t_dim: Teacher feature size (flattened).
        feat_dim: Embedding size.
        nce_k: Negatives per sample.
        nce_t: Temperature.
        nce_m: Memory momentum.
        loss_weight: Multiplies the loss (0.8 in the paper, next to KD).
        teacher_detach: Stop gradients into ``t_feature`` (the teacher head still trains).

    Raises:
        LossShapeError: (in ``forward``) inputs whose shapes the loss cannot compare; the message
            names the loss and both shapes.

    Example:
        >>> import torch
        >>> crd = CRDLoss(num_data=20, s_dim=6, t_dim=8, feat_dim=4, nce_k=5)
        >>> crd(torch.randn(3, 6), torch.randn(3, 8), torch.tensor([0, 5, 9])).dim()
        0
    """

    def __init__(
        self,
        num_data: int,
        s_dim: int,
        t_dim: int,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
        loss_weight: float = 1.0,
        teacher_detach: bool = True,
    ) -> None:
        super().__init__(loss_weight, teacher_detach)
        if num_data < 1 or nce_k < 1:
            raise ValueError(f"CRDLoss: num_data and nce_k must be >= 1, got {num_data} and {nce_k}.")
        self.num_data, self.s_dim, self.t_dim = num_data, s_dim, t_dim
        self.nce_k, self.nce_t, self.nce_m = nce_k, nce_t, nce_m
        self.embed_s = _Embed(s_dim, feat_dim)
        self.embed_t = _Embed(t_dim, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(num_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(num_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        # Normalisation constants Z of the reference; negative means "set at the first call".
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def _check(
        self, s: torch.Tensor, t: torch.Tensor, idx: torch.Tensor, contrast_idx: torch.Tensor | None
    ) -> None:
        check_tensor("CRDLoss", "s_feature", s)
        check_tensor("CRDLoss", "t_feature", t)
        check_tensor("CRDLoss", "idx", idx)
        n = s.shape[0]
        if t.shape[0] != n or s[0].numel() != self.s_dim or t[0].numel() != self.t_dim:
            raise LossShapeError(
                f"CRDLoss: s_feature has shape {tuple(s.shape)} but t_feature has shape {tuple(t.shape)}; "
                f"expected (N, {self.s_dim}) and (N, {self.t_dim}) after flattening (s_dim, t_dim)."
            )
        if idx.shape != (n,) or idx.is_floating_point():
            raise LossShapeError(
                f"CRDLoss: idx has shape {tuple(idx.shape)} (dtype {idx.dtype}); pass the ({n},) integer "
                "dataset indices of the batch (digits_loaders(..., with_indices=True))."
            )
        if n and (int(idx.min()) < 0 or int(idx.max()) >= self.num_data):
            raise ValueError(f"CRDLoss: idx must lie in [0, num_data={self.num_data}).")
        if contrast_idx is not None and (contrast_idx.dim() != 2 or contrast_idx.shape[0] != n):
            raise LossShapeError(
                f"CRDLoss: contrast_idx has shape {tuple(contrast_idx.shape)}; expected ({n}, K+1) with the "
                "positive index idx in column 0."
            )

    def forward(
        self,
        s_feature: torch.Tensor,
        t_feature: torch.Tensor,
        idx: torch.Tensor,
        contrast_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss for student/teacher features of the samples with dataset indices ``idx``.

        Args:
            s_feature: ``(N, s_dim)`` (or any shape flattening to it).
            t_feature: ``(N, t_dim)``.
            idx: ``(N,)`` integer dataset indices (rows of the memory bank).
            contrast_idx: Optional ``(N, K+1)`` memory rows to score, positive first; drawn uniformly
                (with ``idx`` in column 0) when omitted.
        """
        self._check(s_feature, t_feature, idx, contrast_idx)
        t_feature = self.detached(t_feature)
        device = self.memory_s.device  # indices may come from a CPU data loader
        idx = idx.to(device=device, dtype=torch.long)
        v_s, v_t = self.embed_s(s_feature), self.embed_t(t_feature)
        n = v_s.shape[0]
        if contrast_idx is None:
            contrast_idx = torch.randint(0, self.num_data, (n, self.nce_k + 1), device=device)
            contrast_idx[:, 0] = idx
        contrast_idx = contrast_idx.to(device=device, dtype=torch.long)
        # exp(<v, m> / 0.07) reaches ~1e6: score in float32 even under autocast (fp16 would overflow).
        with torch.autocast(device_type=device.type, enabled=False):
            v_s32, v_t32 = v_s.float(), v_t.float()
            w_t = self.memory_t[contrast_idx].float()  # (N, K+1, D): teacher memory scores the student
            w_s = self.memory_s[contrast_idx].float()
            out_s = torch.exp(torch.bmm(w_t, v_s32.unsqueeze(2)).squeeze(2) / self.nce_t)
            out_t = torch.exp(torch.bmm(w_s, v_t32.unsqueeze(2)).squeeze(2) / self.nce_t)
            if self.z_s < 0:
                self.z_s.fill_(out_s.detach().mean().item() * self.num_data)
            if self.z_t < 0:
                self.z_t.fill_(out_t.detach().mean().item() * self.num_data)
            out_s = out_s / self.z_s
            out_t = out_t / self.z_t
            loss = nce_loss(out_s, self.num_data) + nce_loss(out_t, self.num_data)
        if self.training:
            self._update_memory(idx, v_s.detach(), v_t.detach())
        return self.loss_weight * loss

    @torch.no_grad()
    def _update_memory(self, idx: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            row = memory[idx] * self.nce_m + v.to(memory.dtype) * (1 - self.nce_m)
            memory.index_copy_(0, idx, F.normalize(row, dim=1))
