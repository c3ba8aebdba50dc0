"""FitNets regressor: convolution + optional normalisation + optional activation."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.distill.connectors._lookup import lookup_module_class
from torchpare.registry import CONNECTORS

__all__ = ["ConvModuleConnector"]

_NORM_ALIASES = {"BN": "BatchNorm2d", "IN": "InstanceNorm2d", "SyncBN": "SyncBatchNorm"}


@CONNECTORS.register(aliases=("ConvModule", "FitNetsRegressor"))
class ConvModuleConnector(nn.Module):
    """``act(norm(conv(x)))``: maps student feature maps to the teacher's channels (FitNets regressor).

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015). With ``norm="BN"`` and a 1x1
    kernel this is also the student connector of OFD (Heo et al., ICCV 2019).

    Args:
        in_channels: Student channels.
        out_channels: Teacher channels.
        kernel_size: As in ``nn.Conv2d`` (default 1: a 1x1 conv keeping the spatial size).
        stride: As in ``nn.Conv2d``.
        padding: As in ``nn.Conv2d``.
        dilation: As in ``nn.Conv2d``.
        groups: As in ``nn.Conv2d``.
        bias: Conv bias; ``None`` means "only when there is no norm layer".
        norm: ``None``, ``"BN"``, ``"IN"``, ``"SyncBN"`` or any ``torch.nn`` class name taking
            ``num_features`` (e.g. ``"BatchNorm2d"``).
        act: ``None`` or a ``torch.nn`` activation class name (``"ReLU"``, ``"GELU"``, ...).

    Raises:
        AttributeError: unknown ``norm`` / ``act`` name (with suggestions).

    Example:
        >>> import torch
        >>> c = ConvModuleConnector(8, 32, norm="BN", act="ReLU")
        >>> c(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__()
        who = f"ConvModuleConnector({in_channels}->{out_channels})"
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=(norm is None) if bias is None else bias,
        )
        if norm is None:
            self.norm: nn.Module = nn.Identity()
        else:
            norm_cls = lookup_module_class(_NORM_ALIASES.get(norm, norm), who, "norm layer")
            self.norm = norm_cls(out_channels, affine=True) if norm == "IN" else norm_cls(out_channels)
        self.act: nn.Module = nn.Identity() if act is None else lookup_module_class(act, who, "activation")()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, norm and activation to ``(N, in_channels, H, W)``."""
        return self.act(self.norm(self.conv(x)))
