"""Teacher and student models for scikit-learn digits (images ``(N, 1, 8, 8)``, 10 classes).

The module names (``stem``, ``layer1``..``layer3``, ``fc`` for the CNNs; ``fc1``, ``fc2`` for the MLP)
are part of the team contract: distillation configs and tests name them.
"""

from __future__ import annotations

import torch
from torch import nn

from torchpare.registry import MODELS

__all__ = ["DigitsCNN", "DigitsSmallCNN", "DigitsMLP", "conv_bn_relu"]


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, kernel_size: int = 3) -> nn.Sequential:
    """A ``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` block with submodules ``conv``, ``bn``, ``relu``.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Convolution stride.
        kernel_size: Square kernel size; padding keeps the spatial size at stride 1.

    Returns:
        The block as an ``nn.Sequential`` (indexable as ``block[0]`` or ``block.conv``).

    Example:
        >>> conv_bn_relu(1, 4)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False))
    block.add_module("bn", nn.BatchNorm2d(out_ch))
    # Not in place: recorders keep references to conv/bn outputs, an in-place ReLU would rewrite them.
    block.add_module("relu", nn.ReLU())
    return block


def _check_positive(who: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive int, got {value!r}.")


@MODELS.register()
class DigitsCNN(nn.Module):
    """Conv teacher for 8x8 digits: ``stem`` -> ``layer1`` -> ``layer2`` (stride 2) -> ``layer3`` -> pool -> ``fc``.

    Channels are ``w, 2w, 4w, 4w`` for ``width=w``; spatial size 8x8 until ``layer2``, then 4x4.
    ``width=32`` gives about 240k parameters (``width=20``: about 95k).

    Args:
        width: Base channel count ``w``.
        num_classes: Number of logits.

    Example:
        >>> DigitsCNN(width=4)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        _check_positive(type(self).__name__, width=width, num_classes=num_classes)
        self.width = width
        self.num_classes = num_classes
        self.stem = conv_bn_relu(1, width)
        self.layer1 = conv_bn_relu(width, 2 * width)
        self.layer2 = conv_bn_relu(2 * width, 4 * width, stride=2)
        self.layer3 = conv_bn_relu(4 * width, 4 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register()
class DigitsSmallCNN(DigitsCNN):
    """Small conv student with the module names of :class:`DigitsCNN` (default ``width=8``, ~15k params).

    Example:
        >>> DigitsSmallCNN()(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 10])
    """

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__(width=width, num_classes=num_classes)


@MODELS.register()
class DigitsMLP(nn.Module):
    """MLP student ``64 -> hidden -> num_classes`` on flattened 8x8 images; ``fc2`` gives the logits.

    Args:
        hidden: Hidden units (16 gives the 1.2k-parameter student of the baselines).
        num_classes: Number of logits.

    Example:
        >>> DigitsMLP()(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 10])
        >>> sum(p.numel() for p in DigitsMLP().parameters())
        1210
    """

    def __init__(self, hidden: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        _check_positive(type(self).__name__, hidden=hidden, num_classes=num_classes)
        self.hidden = hidden
        self.num_classes = num_classes
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.flatten(x))))
