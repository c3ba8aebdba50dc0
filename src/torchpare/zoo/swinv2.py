"""A Swin-V2-like model: scaled cosine window attention with a continuous position bias MLP (tiny).

:class:`WindowAttentionV2` follows torchvision's ``ShiftedWindowAttentionV2``:

- the fused ``qkv`` Linear's bias is cloned in the forward with its k third zeroed (Swin-V2 has no k
  bias) and applied with ``F.linear``;
- scores are cosine similarities (``F.normalize`` of q and k) times ``exp(clamp(logit_scale,
  max=log(100)))``, a learned ``(num_heads, 1, 1)`` parameter;
- the position bias is ``16 * sigmoid`` of a ``cpb_mlp`` (``Linear(2, 512) - ReLU - Linear(512, heads,
  bias=False)``) applied to a log-spaced table of relative coordinates, gathered through
  ``relative_position_index``.

Blocks are res-post-norm (``x + norm(attn(x))``, ``x + norm(mlp(x))``) and stages are joined by
``PatchMergingV2`` (2x2 neighbours concatenated, ``Linear(4C, 2C, bias=False)``, then the norm). Unlike
torchvision, the forward reshapes heads with ``self.head_dim`` rather than the input width, so heads can
be removed. Pruning a head slices its q/k/v rows and biases, its ``logit_scale`` entry, its
``cpb_mlp[2]`` row and its ``proj`` columns (``torchpare.prune.rules.mha.SwinV2WindowAttentionRule``,
attached by ``prune`` to :class:`WindowAttentionV2` by itself; the zoo does not import ``prune``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.registry import MODELS
from torchpare.zoo.swin import _attend, _in_windows, _relative_position_index, _shift_mask

__all__ = ["SwinV2Like", "SwinV2Block", "WindowAttentionV2", "PatchMergingV2"]


def _relative_coords_table(window: int) -> torch.Tensor:
    """``(1, 2w-1, 2w-1, 2)`` log-spaced relative coordinates, as torchvision's Swin-V2 builds them."""
    coords = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = (
        torch.stack(torch.meshgrid(coords, coords, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    )
    table = table / (window - 1) * 8  # normalised to [-8, 8]
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / 3.0


class WindowAttentionV2(nn.Module):
    """Scaled cosine attention inside each window, with a continuous (MLP) relative position bias.

    Args:
        dim: Channel width of the tokens.
        window: Window side (at least 2).
        num_heads: Heads (``dim`` must be a multiple).
        cpb_hidden: Hidden width of the position bias MLP (512 in Swin-V2).
    """

    def __init__(self, dim: int, window: int, num_heads: int, cpb_hidden: int = 512) -> None:
        super().__init__()
        self.window, self.num_heads, self.head_dim = window, num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        with torch.no_grad():
            self.qkv.bias[dim : 2 * dim].zero_()
        self.proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False)
        )
        self.register_buffer("relative_coords_table", _relative_coords_table(window), persistent=False)
        self.register_buffer("relative_position_index", _relative_position_index(window), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """``(1, heads, w*w, w*w)``: ``16 * sigmoid`` of the MLP's bias gathered per token pair."""
        n = self.window**2
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        return 16 * torch.sigmoid(bias)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``windows``: ``(B * num_windows, w*w, C)``; ``mask``: ``(num_windows, w*w, w*w)`` or ``None``."""
        b, n, _ = windows.shape
        qkv_bias = self.qkv.bias
        if qkv_bias is not None:  # Swin-V2 has no k bias: torchvision zeroes that third of a clone
            qkv_bias = qkv_bias.clone()
            length = qkv_bias.numel() // 3
            qkv_bias[length : 2 * length].zero_()
        qkv = F.linear(windows, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        attn = attn + self.relative_position_bias()
        return self.proj(_attend(attn, v, mask))


class SwinV2Block(nn.Module):
    """Res-post-norm block: ``x + norm1(attn(windows(x)))`` then ``x + norm2(mlp(x))`` on ``(B, H, W, C)``.

    Args:
        dim: Channel width.
        resolution: Token grid side (a multiple of ``window``).
        window: Window side.
        num_heads: Attention heads.
        shift: Cyclic shift (0: plain windows; ``window // 2``: shifted windows with a mask).
    """

    def __init__(self, dim: int, resolution: int, window: int, num_heads: int, shift: int = 0) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.attn = WindowAttentionV2(dim, window, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        mask = _shift_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(_in_windows(self.attn, x, self.attn_mask, self.window, self.shift))
        return x + self.norm2(self.mlp(x))


class PatchMergingV2(nn.Module):
    """Swin-V2 patch merging: 2x2 neighbours concatenated, ``Linear(4C, 2C, bias=False)``, then the norm.

    Args:
        dim: Input channel width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :]
        x2, x3 = x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]
        return self.norm(self.reduction(torch.cat([x0, x1, x2, x3], -1)))


@MODELS.register()
class SwinV2Like(nn.Module):
    """Tiny Swin-V2-like classifier: patch embedding, two stages of V2 blocks joined by patch merging.

    Each stage has a plain and a shifted window block (torchvision drops the shift when the window covers
    the whole grid; so does this model).

    Args:
        image_size: Input height and width.
        patch_size: Patch side.
        dim: Channel width of the first stage (doubled by the merging).
        window: Window side.
        num_heads: Heads per block of each stage.
        num_classes: Output logits.

    Example:
        >>> import torch
        >>> SwinV2Like()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 16,
        window: int = 4,
        num_heads: tuple[int, int] = (2, 4),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        res = image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dim)
        stages: list[nn.Module] = []
        for i, heads in enumerate(num_heads):
            width, side = dim * 2**i, res // 2**i
            win = min(window, side)
            shift = win // 2 if side > win else 0
            if image_size % patch_size or side * 2**i != res or side % win or win < 2:
                raise ValueError(
                    f"SwinV2Like(): stage {i} of image_size={image_size} / patch_size={patch_size} has a "
                    f"{res / 2**i:g}-token side that window={window} does not cut into whole windows; use an "
                    f"image_size / patch_size that is a multiple of window * 2**(len(num_heads) - 1)."
                )
            stages.append(
                nn.Sequential(
                    SwinV2Block(width, side, win, heads, shift=0),
                    SwinV2Block(width, side, win, heads, shift=shift),
                )
            )
            if i < len(num_heads) - 1:
                stages.append(PatchMergingV2(width))
        self.stages = nn.Sequential(*stages)
        out = dim * 2 ** (len(num_heads) - 1)
        self.norm = nn.LayerNorm(out)
        self.head = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        x = self.norm(self.stages(x))
        return self.head(F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 1).flatten(1))
