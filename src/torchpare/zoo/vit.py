"""A plain-PyTorch Vision Transformer on ``nn.MultiheadAttention`` (torchvision's ViT layout, tiny).

Patch embedding by a strided ``Conv2d`` (``conv_proj``), a learned class token and position embedding,
pre-norm encoder blocks (``ln_1``, ``self_attention``, ``ln_2``, ``mlp``) with residual adds, a final
LayerNorm and a Linear head on the class token. Attention heads, MLP hidden units and the residual width
are prunable groups (the residual width through LayerNorms is inexact: norm statistics change).
"""

from __future__ import annotations

import torch
from torch import nn

from torchpare.registry import MODELS

__all__ = ["ViT", "ViTEncoderBlock"]


class ViTEncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; attention with ``need_weights=False``.

    Args:
        hidden: Residual width.
        num_heads: Attention heads (``hidden`` must be a multiple).
        mlp_dim: MLP hidden units.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


@MODELS.register()
class ViT(nn.Module):
    """Tiny ViT: ``(N, 3, image_size, image_size)`` images to ``(N, num_classes)`` logits.

    Args:
        image_size: Input height and width.
        patch_size: Patch side (``image_size`` must be a multiple).
        hidden: Residual width.
        num_heads: Heads per block.
        mlp_dim: MLP hidden units per block.
        num_layers: Encoder blocks.
        num_classes: Output logits.

    Example:
        >>> import torch
        >>> ViT()(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        image_size: int = 16,
        patch_size: int = 4,
        hidden: int = 32,
        num_heads: int = 4,
        mlp_dim: int = 64,
        num_layers: int = 2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT(): image_size={image_size} is not a multiple of patch_size={patch_size}.")
        self.conv_proj = nn.Conv2d(3, hidden, patch_size, stride=patch_size)
        n = (image_size // patch_size) ** 2
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, hidden) * 0.02)
        self.layers = nn.Sequential(*(ViTEncoderBlock(hidden, num_heads, mlp_dim) for _ in range(num_layers)))
        self.ln = nn.LayerNorm(hidden, eps=1e-6)
        self.heads = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, patches, hidden)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        x = self.ln(self.layers(x))
        return self.heads(x[:, 0])
