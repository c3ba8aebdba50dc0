"""Seeded augmentation views: view ``v`` of sample ``i`` is the same tensor in every epoch and process.

:class:`AugmentedViews` wraps a ``(x, y)`` dataset; epoch ``e`` serves view ``e % num_views``, and each
item is a dict with ``inputs``, ``targets``, ``indices`` and ``view``, the key the teacher cache needs.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = AugmentedViews(TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4)), random_shift, num_views=2)
    >>> a = ds[1]["inputs"]; ds.set_epoch(1); b = ds[1]["inputs"]; ds.set_epoch(2)
    >>> torch.equal(a, ds[1]["inputs"]), ds[1]["view"]
    (True, 0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["AugmentedViews", "random_shift"]


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift an image ``(C, H, W)`` by up to ``max_shift`` pixels along each axis (zero fill)."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        x[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


class AugmentedViews(Dataset):
    """A dataset whose item ``i`` in epoch ``e`` is view ``e % num_views``, drawn with seed ``(seed, i, view)``.

    Args:
        base: Items ``(x, y, ...)``.
        transform: ``transform(x, generator) -> x``.
        num_views: Distinct views per sample.
        seed: Seed of the views.
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                 num_views: int = 1, seed: int = 0) -> None:
        if num_views < 1:
            raise ValueError(f"AugmentedViews: num_views must be >= 1, got {num_views}.")
        self.base, self.transform, self.num_views, self.seed = base, transform, num_views, seed
        self.view = 0

    def set_epoch(self, epoch: int) -> None:
        """Serve view ``epoch % num_views`` (the trainer calls this at each epoch start)."""
        self.view = epoch % self.num_views

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, y = self.base[i][:2]
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(i)) * 1_009 + self.view)
        return {"inputs": self.transform(x, gen), "targets": y, "indices": int(i), "view": self.view}
