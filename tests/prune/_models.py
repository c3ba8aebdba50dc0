"""Tiny models, one per topology, for the dependency-graph and surgery tests."""

from __future__ import annotations

import torch
from torch import nn


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so equivalence checks see every slice."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if (
                isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                and getattr(m, "weight", None) is not None
            ):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model


class ConcatNet(nn.Module):
    """Two branches concatenated along channels, read by one conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1))))


class FlattenNet(nn.Module):
    """Conv -> flatten -> Linear: each channel owns H*W consecutive Linear columns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class DepthwiseNet(nn.Module):
    """Pointwise -> depthwise -> pointwise (MobileNet style)."""

    def __init__(self) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, 6, 1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn = nn.BatchNorm2d(6)
        self.pw2 = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(torch.relu(self.bn(self.dw(self.pw1(x)))))


class GroupedNet(nn.Module):
    """A grouped conv (2 groups of 4 in, 3 out) between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 6, 3, padding=1, groups=2)
        self.c2 = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.g(torch.relu(self.c1(x)))))


class SharedTwiceNet(nn.Module):
    """One conv called on two branches; the results are added."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.head(self.shared(h) + self.shared(h * 2.0))


class ResidualNet(nn.Module):
    """stem -> (conv-bn-relu-conv-bn) + identity -> head: stem and block outputs are coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 5, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))))
        return self.head(h.mean(dim=(2, 3)))


class ChunkNet(nn.Module):
    """GLU-style gate: a Linear's output chunked in two halves multiplied together."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 12)
        self.down = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(a * torch.sigmoid(b))


class SplitNet(nn.Module):
    """A hard-coded split of channels: after pruning the sizes would be stale, so it is blocked."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 8)
        self.left = nn.Linear(3, 2)
        self.right = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).split([3, 5], dim=-1)
        return self.left(a) + self.right(b)


class UnknownOpNet(nn.Module):
    """Channels go through ``torch.cummax``, which no rule describes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 1)
        self.other = nn.Conv1d(2, 3, 1)
        self.head = nn.Conv1d(7, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weird = torch.cummax(self.conv(x), dim=1).values
        return self.head(torch.cat([weird, torch.relu(self.other(x))], dim=1))


class Scale(nn.Module):
    """A custom layer (per-channel scale on dim 1) that needs a user rule to be a leaf."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcl,c->bcl", x, self.w)  # einsum has no built-in rule


class CustomLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 1)
        self.scale = Scale(4)
        self.head = nn.Conv1d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale(self.conv(x)))


class MiniViT(nn.Module):
    """Patch conv + class token + position embedding + LayerNorm + MLP: free parameters in the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        t = t + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(t))))
        return self.head(t[:, 0])
