"""Check ground-truth labels passed to label-aware logit losses (DKD, WSLD)."""

from __future__ import annotations

import torch

from torchpare.distill.losses._checks import LossShapeError, check_tensor

__all__ = ["check_labels"]


def check_labels(who: str, preds_S: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
    """Return ``gt_labels`` as a ``(N,)`` int64 tensor of class indices matching ``preds_S`` ``(N, C)``.

    Raises:
        LossShapeError: wrong shape; ValueError: labels out of ``[0, C)``; TypeError: not a tensor/int.
    """
    check_tensor(who, "gt_labels", gt_labels)
    if gt_labels.is_floating_point() or gt_labels.dtype == torch.bool:
        raise TypeError(f"{who}: gt_labels must hold integer class indices, got dtype {gt_labels.dtype}.")
    if gt_labels.dim() != 1 or gt_labels.shape[0] != preds_S.shape[0]:
        raise LossShapeError(
            f"{who}: gt_labels has shape {tuple(gt_labels.shape)} but preds_S has shape "
            f"{tuple(preds_S.shape)}; pass one class index per sample, shape ({preds_S.shape[0]},)."
        )
    num_classes = preds_S.shape[1]
    if gt_labels.numel() and (int(gt_labels.min()) < 0 or int(gt_labels.max()) >= num_classes):
        raise ValueError(
            f"{who}: gt_labels must lie in [0, {num_classes}) for preds of shape {tuple(preds_S.shape)}, "
            f"got range [{int(gt_labels.min())}, {int(gt_labels.max())}]."
        )
    return gt_labels.long()
