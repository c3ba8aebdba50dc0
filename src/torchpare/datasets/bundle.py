"""The plain data bundle that the engine trains, evaluates and measures on, and that any dataset fills.

A ``DATASETS`` entry (a class or function registered in :data:`torchpare.registry.DATASETS`) returns a
:class:`DataBundle`; :func:`torchpare.engine.data.build_data` builds one from a config's ``data`` section.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x, y = torch.randn(8, 3), torch.arange(8) % 2
    >>> bundle = DataBundle(train=TensorDataset(x, y), val=None, test=TensorDataset(x, y), example=x[:1])
    >>> len(bundle.train), bundle.batch.shape
    (8, torch.Size([1, 3]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from torchpare.model_io import UNLABELLED  # the "no label" target of distill and the engine

__all__ = ["DataBundle", "mask_labels", "UNLABELLED"]



@dataclass
class DataBundle:
    """Train / val / test sets and example inputs of one dataset.

    The sets are map-style datasets yielding ``(x, y)``, ``(x, y, sample_index)`` or dicts: the
    :class:`~torchpare.engine.trainer.Trainer` draws its own (seeded, resumable) batches from them.

    Args:
        train: Training set.
        val: Evaluated after every epoch, or ``None``.
        test: Evaluated once at the end of a run (``results.json``).
        example: Model inputs for tracing, pruning and counting FLOPs (one sample is enough).
        batch: Model inputs for latency measurements; ``None`` uses ``example``.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset
    example: Any
    batch: Any = None

    def __post_init__(self) -> None:
        if self.batch is None:
            self.batch = self.example


def mask_labels(y: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Keep ``fraction`` of the labels per class (seeded); the others become ``-100`` (unlabelled).

    Example:
        >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> int((mask_labels(y, 0.5) >= 0).sum())
        4
    """
    if fraction >= 1.0:
        return y.clone()
    gen = torch.Generator().manual_seed(seed + 12345)
    out = torch.full_like(y, UNLABELLED)
    for cls in torch.unique(y):
        idx = torch.nonzero(y == cls).flatten()
        keep = idx[torch.randperm(len(idx), generator=gen)[: max(1, round(fraction * len(idx)))]]
        out[keep] = y[keep]
    return out
