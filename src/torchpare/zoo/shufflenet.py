"""A ShuffleNet-V2-like model (tiny): channel split, branches, concatenation and channel shuffle.

The channel shuffle (``view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)``) interleaves the
two branches' channels, so every later layer reads channels of both; the stride-1 units pass half of
their input through untouched (``chunk(2, dim=1)``). Both are what torchvision's ShuffleNet V2 does.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torchpare.registry import MODELS

__all__ = ["ShuffleNetV2Like", "ShuffleUnit", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel blocks of ``x`` (``(B, C, H, W)``), as ShuffleNet does.

    Example:
        >>> channel_shuffle(torch.arange(4.0).view(1, 4, 1, 1), 2).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
    """
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _conv_bn(
    in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers = OrderedDict(
        conv=nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False), bn=nn.BatchNorm2d(out_ch)
    )
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


class ShuffleUnit(nn.Module):
    """ShuffleNet-V2 unit: stride 1 splits the channels and transforms one half; stride 2 transforms both
    (a depthwise branch on the input next to the main branch); the halves are concatenated and shuffled.

    Args:
        in_ch: Input channels.
        out_ch: Output channels (even).
        stride: 1 (``in_ch == out_ch``) or 2.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if stride == 1 and in_ch != out_ch:
            raise ValueError(f"ShuffleUnit(): stride 1 needs in_ch == out_ch, got {in_ch} and {out_ch}.")
        self.stride = stride
        half = out_ch // 2
        branch_in = in_ch if stride == 2 else in_ch // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                _conv_bn(in_ch, in_ch, 3, stride, groups=in_ch, relu=False), _conv_bn(in_ch, half, 1)
            )
        self.branch2 = nn.Sequential(
            _conv_bn(branch_in, half, 1),
            _conv_bn(half, half, 3, stride, groups=half, relu=False),
            _conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


@MODELS.register()
class ShuffleNetV2Like(nn.Module):
    """Tiny ShuffleNet-V2-like classifier: stem, two stages (a stride-2 unit then a stride-1 unit), head.

    Args:
        width: Stem channels (stage widths are ``2 * width`` and ``4 * width``).
        num_classes: Number of logits.
        in_channels: Input channels.

    Example:
        >>> ShuffleNetV2Like()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width, 3, stride=2)
        self.stages = nn.Sequential(
            ShuffleUnit(width, 2 * width, 2),
            ShuffleUnit(2 * width, 2 * width, 1),
            ShuffleUnit(2 * width, 4 * width, 2),
            ShuffleUnit(4 * width, 4 * width, 1),
        )
        self.last = _conv_bn(4 * width, 8 * width, 1)
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(8 * width, num_classes)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.stages(self.stem(x))))
