"""Generators for data-free distillation: latent noise in, synthetic images out.

A generator is an ``nn.Module`` whose ``forward(data=None, batch_size=0)`` returns a batch of images;
``data`` is a latent ``(N, latent_dim)`` tensor, or ``None`` to draw ``batch_size`` latents from a
standard normal (on the generator's device and dtype). Generators are registered in
:data:`GENERATORS` so configs name them (``{"type": "DAFLGenerator", "img_size": 8, ...}``).

Example:
    >>> import torch
    >>> gen = GENERATORS.build({"type": "DAFLGenerator", "img_size": 8, "latent_dim": 16,
    ...                         "hidden_channels": 8, "out_channels": 1})
    >>> gen(batch_size=3).shape
    torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.registry import Registry

__all__ = ["GENERATORS", "BaseGenerator", "DAFLGenerator", "build_generator"]

GENERATORS = Registry("generators", populate_from=("torchpare.distill.generators",))
_OUTPUTS = ("sigmoid", "tanh", "bn")


class BaseGenerator(nn.Module):
    """Holds ``img_size`` and ``latent_dim`` and draws the latent batch (:meth:`process_latent`).

    Args:
        img_size: Side of the square images produced.
        latent_dim: Size of one latent vector.
    """

    def __init__(self, img_size: int, latent_dim: int) -> None:
        super().__init__()
        for name, value in (("img_size", img_size), ("latent_dim", latent_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {value!r}.")
        self.img_size = img_size
        self.latent_dim = latent_dim

    def process_latent(self, data: torch.Tensor | None = None, batch_size: int = 0) -> torch.Tensor:
        """``data`` checked as ``(N, latent_dim)``, or ``batch_size`` standard-normal latents.

        Raises:
            ValueError: ``data`` has the wrong shape, or neither ``data`` nor a positive ``batch_size``.
        """
        ref = next(self.parameters())
        if data is not None:
            if data.dim() != 2 or data.shape[1] != self.latent_dim:
                raise ValueError(
                    f"{type(self).__name__}: latent data must be (N, {self.latent_dim}), got {tuple(data.shape)}."
                )
            return data.to(device=ref.device, dtype=ref.dtype)
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: give latent data or batch_size >= 1, got {batch_size}.")
        return torch.randn(batch_size, self.latent_dim, device=ref.device, dtype=ref.dtype)


@GENERATORS.register(aliases=("DAFL",))
class DAFLGenerator(BaseGenerator):
    """The generator of DAFL (Chen et al., ICCV 2019) as in MMRazor: linear -> BN -> 2x (upsample, conv-BN).

    ``img_size`` must be divisible by ``scale_factor ** 2``. The last block maps to ``out_channels`` and
    the output goes through ``output``: ``"sigmoid"`` (images in ``[0, 1]``, the digits data),
    ``"tanh"`` (``[-1, 1]``) or ``"bn"`` (``tanh`` then an affine-free BatchNorm, the paper's choice for
    mean/std-normalised data).

    Args:
        img_size: Side of the images.
        latent_dim: Size of the latent vector.
        hidden_channels: Channels of the first feature map (halved in the last block).
        out_channels: Image channels.
        scale_factor: Upsampling factor of each of the two blocks.
        bn_eps: ``eps`` of the inner BatchNorms (the paper's 0.8).
        leaky_slope: Negative slope of the LeakyReLUs.
        output: ``"sigmoid"``, ``"tanh"`` or ``"bn"``.

    Raises:
        ValueError: a non-positive size, ``img_size`` not divisible by ``scale_factor ** 2``, or an
            unknown ``output``.

    Example:
        >>> DAFLGenerator(img_size=8, latent_dim=4, hidden_channels=8)(torch.randn(2, 4)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        img_size: int = 8,
        latent_dim: int = 64,
        hidden_channels: int = 64,
        out_channels: int = 1,
        scale_factor: int = 2,
        bn_eps: float = 0.8,
        leaky_slope: float = 0.2,
        output: str = "sigmoid",
    ) -> None:
        super().__init__(img_size, latent_dim)
        if img_size % (scale_factor**2):
            raise ValueError(
                f"DAFLGenerator: img_size={img_size} must be divisible by scale_factor**2={scale_factor**2}."
            )
        if output not in _OUTPUTS:
            raise ValueError(f"DAFLGenerator: output must be one of {', '.join(_OUTPUTS)}, got {output!r}.")
        self.init_size = img_size // scale_factor**2
        self.scale_factor = scale_factor
        self.hidden_channels = hidden_channels
        self.output = output
        self.linear = nn.Linear(latent_dim, hidden_channels * self.init_size**2)
        self.bn1 = nn.BatchNorm2d(hidden_channels)
        self.conv_blocks1 = nn.Sequential(
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.BatchNorm2d(hidden_channels, eps=bn_eps),
            nn.LeakyReLU(leaky_slope),
        )
        half = max(hidden_channels // 2, 1)
        self.conv_blocks2 = nn.Sequential(
            nn.Conv2d(hidden_channels, half, 3, padding=1),
            nn.BatchNorm2d(half, eps=bn_eps),
            nn.LeakyReLU(leaky_slope),
            nn.Conv2d(half, out_channels, 3, padding=1),
        )
        self.out_bn = nn.BatchNorm2d(out_channels, affine=False) if output == "bn" else None

    def forward(self, data: torch.Tensor | None = None, batch_size: int = 0) -> torch.Tensor:
        """Images ``(N, out_channels, img_size, img_size)`` from ``data`` or ``batch_size`` fresh latents."""
        z = self.process_latent(data, batch_size)
        x = self.linear(z).view(z.shape[0], self.hidden_channels, self.init_size, self.init_size)
        x = self.bn1(x)
        x = F.interpolate(x, scale_factor=self.scale_factor)
        x = self.conv_blocks1(x)
        x = F.interpolate(x, scale_factor=self.scale_factor)
        x = self.conv_blocks2(x)
        if self.output == "sigmoid":
            return torch.sigmoid(x)
        x = torch.tanh(x)
        return self.out_bn(x) if self.out_bn is not None else x


def build_generator(spec: nn.Module | Mapping[str, Any], who: str = "generator") -> nn.Module:
    """A generator given as a module, or as a :data:`GENERATORS` config dict.

    Raises:
        TypeError: ``spec`` builds something that is not an ``nn.Module``.
        KeyError: an unknown generator ``type`` (the registry's message lists the known ones).

    Example:
        >>> build_generator({"type": "DAFL", "latent_dim": 4, "hidden_channels": 4}).img_size
        8
    """
    module = GENERATORS.build(spec) if isinstance(spec, Mapping) else spec
    if not isinstance(module, nn.Module):
        raise TypeError(f"{who}: expected an nn.Module or a GENERATORS config dict, got {type(module).__name__}.")
    return module
