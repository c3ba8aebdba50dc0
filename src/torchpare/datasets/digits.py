"""Reference data: scikit-learn's ``load_digits`` (real 8x8 handwritten digits, shipped offline).

The split is fixed and stratified (60/20/20), so every part of torchpare (tests, benchmarks, the
demo) sees the same train/val/test images for a given seed. :func:`digits_data` (``DATASETS`` type
``digits``) fills a :class:`~torchpare.datasets.bundle.DataBundle` from it.

Example:
    >>> split = load_digits_split(seed=0)
    >>> split.x_train.shape[1:], split.x_train.dtype, len(split.y_test)
    (torch.Size([1, 8, 8]), torch.float32, 360)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchpare.datasets.bundle import DataBundle, mask_labels
from torchpare.registry import DATASETS

__all__ = ["DigitsSplit", "DigitsData", "load_digits_split", "digits_loaders", "digits_data"]


@dataclass(frozen=True)
class DigitsSplit:
    """Tensors of one fixed split. Images are ``float32`` in ``[0, 1]``, shaped ``(N, 1, 8, 8)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return 10


def _stratified_indices(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts[0].extend(idx[:n_train])
        parts[1].extend(idx[n_train : n_train + n_val])
        parts[2].extend(idx[n_train + n_val :])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def load_digits_split(seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> DigitsSplit:
    """Load scikit-learn's digits and split them stratified into train/val/test.

    Args:
        seed: Seed of the split (not of training).
        fractions: Train/val/test fractions; must sum to 1.

    Returns:
        A :class:`DigitsSplit` (1797 images in all).

    Raises:
        ValueError: fractions that do not sum to 1.
        ImportError: scikit-learn is not installed (``pip install torchpare[data]``).
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"load_digits_split(): fractions {fractions} must be >= 0 and sum to 1.")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits_split() needs scikit-learn: pip install 'torchpare[data]'") from exc
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    tr, va, te = _stratified_indices(data.target, fractions, seed)
    return DigitsSplit(x[tr], y[tr], x[va], y[va], x[te], y[te])


def digits_loaders(
    split: DigitsSplit, batch_size: int = 64, seed: int = 0, with_indices: bool = False
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train (shuffled with ``seed``), val and test loaders over a split.

    With ``with_indices=True`` each batch is ``(x, y, sample_index)``: CRD and the teacher cache need it.
    """

    def _ds(x: torch.Tensor, y: torch.Tensor) -> TensorDataset:
        return TensorDataset(x, y, torch.arange(len(y))) if with_indices else TensorDataset(x, y)

    gen = torch.Generator().manual_seed(seed)
    return (
        DataLoader(_ds(split.x_train, split.y_train), batch_size=batch_size, shuffle=True, generator=gen),
        DataLoader(_ds(split.x_val, split.y_val), batch_size=256),
        DataLoader(_ds(split.x_test, split.y_test), batch_size=256),
    )


class DigitsData(DataBundle):
    """A :class:`DataBundle` over a digits split, training labels masked to ``label_fraction``.

    ``train`` yields ``(x, y, sample_index)`` (CRD and the teacher cache need the index; masked labels
    are ``-100``), ``train_labelled_only`` the labelled training samples, ``val`` and ``test`` ``(x, y)``.
    ``example`` is one training image, ``batch`` 64 test images (for latency).

    Args:
        split: A :class:`DigitsSplit`.
        label_fraction: Fraction of training labels kept per class (seeded by ``seed``).
        seed: Seed of the label mask.
    """

    def __init__(self, split: DigitsSplit, label_fraction: float = 1.0, seed: int = 0) -> None:
        y = mask_labels(split.y_train, label_fraction, seed)
        super().__init__(
            train=TensorDataset(split.x_train, y, torch.arange(len(y))),
            val=TensorDataset(split.x_val, split.y_val),
            test=TensorDataset(split.x_test, split.y_test),
            example=split.x_train[:1],
            batch=split.x_test[:64],
        )
        self.split = split
        self.train_labelled_only = TensorDataset(split.x_train[y >= 0], y[y >= 0])


@DATASETS.register(aliases=("digits", "load_digits_split"))
def digits_data(
    seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), label_fraction: float = 1.0
) -> DigitsData:
    """The ``digits`` dataset of configs: :func:`load_digits_split` wrapped in a :class:`DigitsData`.

    Args:
        seed: Seed of the split and of the label mask.
        fractions: Train/val/test fractions; must sum to 1.
        label_fraction: Fraction of training labels kept per class; the others become ``-100``.

    Returns:
        A :class:`DigitsData` bundle.

    Raises:
        ValueError: fractions that do not sum to 1.

    Example:
        >>> bundle = digits_data(seed=0, label_fraction=0.1)
        >>> int((bundle.train.tensors[1] >= 0).sum())
        109
    """
    return DigitsData(load_digits_split(seed, fractions), label_fraction, seed=seed)
