"""A Swin-like model: windowed self-attention with a per-head relative position bias table (tiny).

:class:`WindowAttention` follows torchvision's Swin layout: tokens ``(B, H, W, C)`` are cut into
``window x window`` windows (after a cyclic shift of ``window // 2`` in shifted blocks), a fused ``qkv``
Linear is reshaped to ``(3, heads, head_dim)``, a learned ``relative_position_bias_table`` of shape
``((2w-1)^2, heads)`` is gathered through the ``relative_position_index`` buffer and added to the
attention scores, and ``proj`` merges the heads. Shifted blocks add a mask so tokens only attend within
their original region. Pruning a head slices the table's column of that head
(``torchpare.prune.rules.mha.WindowAttentionRule``, which ``prune`` attaches to :class:`WindowAttention`
by itself; the zoo does not import ``prune``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.registry import MODELS

__all__ = ["SwinLike", "SwinBlock", "WindowAttention"]


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten()  # (window^4,)


def _shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """``(windows, w*w, w*w)`` additive mask: -100 between tokens of different regions after the roll."""
    region = torch.zeros(height, width)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[hs, ws] = label
            label += 1
    region = (
        region.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window**2)
    )
    diff = region[:, None, :] - region[:, :, None]
    return diff.ne(0).float() * -100.0


def _attend(attn: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax of window scores ``(B*nW, heads, n, n)`` (plus the shift mask, ``(nW, n, n)``) applied to
    ``v``, heads merged back: ``(B*nW, n, heads * head_dim)``. Shared by the Swin-V1 and V2 windows."""
    b, heads, n, _ = attn.shape
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(b // nw, nw, heads, n, n) + mask[None, :, None]).view(b, heads, n, n)
    return (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, heads * v.shape[-1])


def _in_windows(
    attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, window: int, shift: int
) -> torch.Tensor:
    """``attn`` applied to the (cyclically ``shift``-ed) ``window`` x ``window`` windows of ``x``
    ``(B, H, W, C)``, put back in place: ``(B, H, W, C')``. Shared by the Swin-V1 and V2 blocks."""
    b, h, w, c = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    y = x.view(b, h // window, window, w // window, window, c).transpose(2, 3).reshape(-1, window * window, c)
    y = attn(y, mask)
    y = y.view(b, h // window, w // window, window, window, -1).transpose(2, 3).reshape(b, h, w, -1)
    if shift:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    return y


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a relative position bias per head.

    Args:
        dim: Channel width of the tokens.
        window: Window side.
        num_heads: Heads (``dim`` must be a multiple).
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads, self.head_dim = window, num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, num_heads) * 0.02)
        self.register_buffer("relative_position_index", _relative_position_index(window), persistent=False)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``windows``: ``(B * num_windows, w*w, C)``; ``mask``: ``(num_windows, w*w, w*w)`` or ``None``."""
        b, n, _ = windows.shape
        qkv = self.qkv(windows).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        return self.proj(_attend(attn, v, mask))



class SwinBlock(nn.Module):
    """``x + attn(windows(ln_1(x)))`` then ``x + mlp(ln_2(x))`` on ``(B, H, W, C)`` tokens.

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
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        mask = _shift_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _in_windows(self.attn, self.norm1(x), self.attn_mask, self.window, self.shift)
        return x + self.mlp(self.norm2(x))


@MODELS.register()
class SwinLike(nn.Module):
    """Tiny Swin-like classifier: patch embedding, a plain and a shifted window block, pooled head.

    Args:
        image_size: Input height and width.
        patch_size: Patch side.
        dim: Channel width.
        window: Window side (``image_size // patch_size`` must be a multiple).
        num_heads: Heads per block.
        num_classes: Output logits.

    Example:
        >>> import torch
        >>> SwinLike()(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        image_size: int = 16,
        patch_size: int = 2,
        dim: int = 24,
        window: int = 4,
        num_heads: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        res = image_size // patch_size
        if image_size % patch_size or res % window:
            raise ValueError(
                f"SwinLike(): image_size={image_size} / patch_size={patch_size} must be a multiple of "
                f"window={window}."
            )
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.blocks = nn.Sequential(
            SwinBlock(dim, res, window, num_heads, shift=0),
            SwinBlock(dim, res, window, num_heads, shift=window // 2),
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.norm(self.blocks(x))
        return self.head(F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 1).flatten(1))
