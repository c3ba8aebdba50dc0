"""Activation-boundary connector: 1x1 conv + BN (Heo et al., AAAI 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.registry import CONNECTORS

__all__ = ["ABConnector"]


@CONNECTORS.register(aliases=("AB",))
class ABConnector(nn.Module):
    """``bn(conv1x1(x))`` mapping student pre-ReLU features to the teacher's channels.

    Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons" (AAAI 2019); used with :class:`~torchpare.distill.losses.ABLoss`.

    Args:
        in_channels: Student channels.
        out_channels: Teacher channels.

    Example:
        >>> import torch
        >>> ABConnector(4, 8)(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 8, 3, 3])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        # He init as in the authors' code (kaiming_normal_, fan_out); BN starts as the identity.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` to ``(N, out_channels, H, W)``."""
        return self.bn(self.conv(x))
