"""Re-estimate BatchNorm running statistics after pruning: :func:`recalibrate_bn`.

Removing a channel removes its contribution to every layer that reads it, so the inputs of the next
BatchNorm layers no longer have the mean and variance stored in their running statistics. In eval
mode those stale statistics mis-normalise every following layer and the error compounds with depth:
on digits, a ``DigitsCNN`` pruned to half its FLOPs falls to chance before any training, and a few
forward passes that re-estimate the statistics bring most of the accuracy back (``docs/pruning.md``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    >>> data = [torch.randn(8, 4) + 5.0 for _ in range(4)]
    >>> _ = recalibrate_bn(net, data)
    >>> expected = net[0](torch.cat(data)).mean(0)
    >>> bool(torch.allclose(net[1].running_mean, expected, atol=1e-5)), net.training
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchpare.model_io import call_model

__all__ = ["recalibrate_bn"]


def _forward(model: nn.Module, batch: Any) -> None:
    """Run ``model`` on one calibration batch, laid out like the calibration batches of ``prune()``."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise TypeError("recalibrate_bn(): got an empty tuple/list as a batch; expected (inputs, targets).")
        batch = batch[0]  # (inputs, targets, ...): targets are not needed to estimate statistics
    if isinstance(batch, (Mapping, torch.Tensor, tuple, list)):
        call_model(model, batch)
    else:
        raise TypeError(
            f"recalibrate_bn(): cannot feed a batch of type {type(batch).__name__}; use a tensor, an "
            "(inputs, targets) pair (inputs a tensor, a tuple of positional tensors or a dict of kwargs) "
            "or a dict of keyword tensors."
        )


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], num_batches: int | None = None) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` from ``batches``.

    Each layer's statistics are reset and re-computed as the plain (cumulative) average over the
    batches of the per-batch mean and unbiased variance (``momentum=None``), so the result does not
    depend on a momentum or on the order of the batches; equal batch sizes give the dataset mean
    exactly. Only the BatchNorm layers run in train mode (dropout and the rest stay in eval mode);
    no gradient is computed and no parameter changes. Afterwards every module's mode and every
    layer's ``momentum`` are restored; on an error (or when no batch came) the previous statistics
    are put back as well. Layers built with ``track_running_stats=False`` have none and are skipped.

    Args:
        model: Any model with ``_BatchNorm`` layers (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``...).
        batches: An iterable of batches, on the model's device: tensors, ``(inputs, targets)`` pairs
            (``inputs`` a tensor, a tuple of positional tensors or a dict of keyword tensors; the
            targets are ignored), or dicts of keyword tensors (Hugging Face style).
        num_batches: Use at most this many batches (``None``: all of them).

    Returns:
        ``model``, with updated running statistics.

    Raises:
        ValueError: ``model`` has no BatchNorm layer tracking running statistics, ``num_batches`` is
            not a positive int, or ``batches`` yielded no batch.
        TypeError: a batch has a layout that cannot be fed to the model.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> _ = recalibrate_bn(net, [torch.randn(4, 1, 8, 8)], num_batches=1)
        >>> int(net[1].num_batches_tracked), net.training
        (1, False)
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"recalibrate_bn(): num_batches must be a positive int or None, got {num_batches!r}.")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        raise ValueError(
            f"recalibrate_bn(): {type(model).__name__} has no BatchNorm layer with running statistics "
            "(track_running_stats=True); there is nothing to recalibrate."
        )
    modes = [(m, m.training) for m in model.modules()]
    saved = [
        (bn, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
        for bn in norms
    ]
    seen = 0
    done = False
    try:
        model.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch weighs the same
            bn.train()
        for batch in batches:
            _forward(model, batch)
            seen += 1
            if seen == num_batches:
                break  # before pulling another batch: a loader would load it for nothing
        done = seen > 0
    finally:
        for bn, momentum, mean, var, tracked in saved:
            bn.momentum = momentum
            if not done:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(tracked)
        for module, training in modes:
            module.training = training
    if not done:
        raise ValueError("recalibrate_bn(): the calibration batches yielded no batch; statistics left unchanged.")
    return model
