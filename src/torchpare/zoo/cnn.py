"""Tiny CNNs and an MLP covering the topologies structured pruning must handle.

Each model returns logits and is small enough for unit tests on inputs like ``(2, 3, 16, 16)``:

- :class:`VGGNet`: plain conv stack, max-pooling, flatten-after-conv into a Linear classifier.
- :class:`ResNetBottleneck`: bottleneck residual blocks, 1x1-conv downsample shortcuts, ``head.fc``.
- :class:`DenseNetConcat`: dense blocks whose layers concatenate their inputs (``torch.cat``).
- :class:`MobileNetV2Like`: inverted residuals with depthwise convolutions.
- :class:`SharedConvNet`: one conv module called twice in a forward.
- :class:`GroupedConvNet`: a ``groups=4`` convolution.
- :class:`MLPNet`: a Linear/ReLU stack on feature vectors.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torchpare.registry import MODELS

__all__ = [
    "VGGNet",
    "ResNetBottleneck",
    "Bottleneck",
    "DenseNetConcat",
    "MobileNetV2Like",
    "InvertedResidual",
    "SharedConvNet",
    "GroupedConvNet",
    "MLPNet",
]


def _cbr(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(),
        )
    )


def _classifier_head(in_ch: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(in_ch, num_classes))
    )


@MODELS.register()
class VGGNet(nn.Module):
    """VGG-style stack: ``features`` (conv-BN-ReLU, max-pool) then a flattened ``classifier``.

    The classifier reads the flattened ``C x 4 x 4`` map of a 16x16 input, so pruning a channel of the
    last conv removes 16 consecutive input columns of ``classifier.0``.

    Args:
        widths: Output channels of the convs; a max-pool follows the 2nd and the last one.
        num_classes: Number of logits.
        in_channels: Input channels.
        image_size: Input height/width (must be divisible by 4).

    Example:
        >>> VGGNet()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (8, 16, 16, 32),
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 16,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or image_size % 4:
            raise ValueError(
                f"VGGNet: need at least 2 widths and an image_size divisible by 4, got widths={widths!r}, "
                f"image_size={image_size}."
            )
        layers: list[nn.Module] = []
        ch = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            if i in (1, len(widths) - 1):
                layers.append(nn.MaxPool2d(2))
            ch = w
        self.features = nn.Sequential(*layers)
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Linear(ch * side * side, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Bottleneck(nn.Module):
    """ResNet bottleneck ``1x1 -> 3x3 (stride) -> 1x1 (x expansion)`` plus identity or conv shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@MODELS.register()
class ResNetBottleneck(nn.Module):
    """Small bottleneck ResNet: ``stem``, ``layer1`` (2 blocks), ``layer2`` (2 blocks, stride 2), ``head.fc``.

    The first block of each stage has a 1x1-conv ``downsample`` shortcut; the second adds its input
    unchanged, which ties the channels of the whole stage into one pruning group.

    Args:
        width: Stem channels; bottleneck widths are ``width`` and ``2 * width`` (outputs x4).
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> ResNetBottleneck()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.layer1 = nn.Sequential(Bottleneck(width, width), Bottleneck(width * 4, width))
        self.layer2 = nn.Sequential(
            Bottleneck(width * 4, width * 2, stride=2), Bottleneck(width * 8, width * 2)
        )
        self.head = _classifier_head(width * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_ch, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-activation, then the new features are appended to the input channels.
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


@MODELS.register()
class DenseNetConcat(nn.Module):
    """DenseNet-style model: two dense blocks of concatenating layers joined by a 1x1 transition.

    Args:
        growth: Channels each dense layer appends.
        layers_per_block: Dense layers per block.
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> DenseNetConcat()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, growth: int = 4, layers_per_block: int = 2, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        ch = 2 * growth
        self.stem = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)
        block1 = []
        for _ in range(layers_per_block):
            block1.append(_DenseLayer(ch, growth))
            ch += growth
        self.block1 = nn.Sequential(*block1)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, ch // 2, 1, bias=False), nn.AvgPool2d(2)
        )
        ch //= 2
        block2 = []
        for _ in range(layers_per_block):
            block2.append(_DenseLayer(ch, growth))
            ch += growth
        self.block2 = nn.Sequential(*block2)
        self.norm = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()
        self.head = _classifier_head(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.head(self.relu(self.norm(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear project, residual if shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        self.expand = _cbr(in_ch, hidden, kernel_size=1)
        self.depthwise = _cbr(hidden, hidden, kernel_size=3, stride=stride, groups=hidden)
        self.project = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(hidden, out_ch, 1, bias=False), bn=nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


@MODELS.register()
class MobileNetV2Like(nn.Module):
    """MobileNetV2-like model: stem, three inverted residual blocks (two with residuals), 1x1 conv, head.

    Args:
        width: Stem channels.
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> MobileNetV2Like()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width, stride=2)
        self.blocks = nn.Sequential(
            InvertedResidual(width, width),
            InvertedResidual(width, 2 * width, stride=2),
            InvertedResidual(2 * width, 2 * width),
        )
        self.last = _cbr(2 * width, 4 * width, kernel_size=1)
        self.head = _classifier_head(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


@MODELS.register()
class SharedConvNet(nn.Module):
    """A model that applies the same ``shared`` conv twice (weights reused), then classifies.

    Both calls read and write the same channels, so ``shared``'s input and output channels fall into
    one group with the stem's output.

    Args:
        width: Channels of the stem and the shared conv.
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> SharedConvNet()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.shared = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = _classifier_head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(self.shared(x))
        x = self.relu(self.shared(x))
        return self.head(x)


@MODELS.register()
class GroupedConvNet(nn.Module):
    """A model with a ``groups=4`` convolution between two dense convs.

    Args:
        width: Channels (must be divisible by ``groups``).
        groups: Groups of the middle conv.
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> GroupedConvNet()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 16, groups: int = 4, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if width % groups:
            raise ValueError(f"GroupedConvNet: width={width} must be divisible by groups={groups}.")
        self.stem = _cbr(in_channels, width)
        self.grouped = _cbr(width, width, groups=groups)
        self.pointwise = _cbr(width, 2 * width, kernel_size=1)
        self.head = _classifier_head(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pointwise(self.grouped(self.stem(x))))


@MODELS.register()
class MLPNet(nn.Module):
    """A Linear/ReLU stack on feature vectors ``(N, in_features)``; the last Linear gives the logits.

    Args:
        in_features: Input features.
        hidden: Sizes of the hidden layers.
        num_classes: Number of logits.

    Example:
        >>> MLPNet()(torch.zeros(2, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_features: int = 32, hidden: tuple[int, ...] = (64, 32), num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_features
        for h in hidden:
            layers += [nn.Linear(ch, h), nn.ReLU()]
            ch = h
        layers.append(nn.Linear(ch, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
