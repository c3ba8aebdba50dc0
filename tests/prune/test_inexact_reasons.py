"""Inexact groups say which op makes pruning differ from zeroing, in the group and in graph.report()."""

import torch
from torch import nn

from torchpare.prune import DependencyGraph


class _ScanNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.cumsum(self.a(x), dim=1)  # mixes channels: pruning 'a' is not zeroing it
        return self.fc(self.b(y).mean((2, 3)))


class _NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.ln(self.fc1(x)))


def test_channel_scan_marks_group_inexact_naming_the_op():
    graph = DependencyGraph.build(_ScanNet().eval(), torch.randn(1, 3, 12, 12))
    group = graph.group("a")
    assert not group.exact
    assert "cumsum" in group.inexact_reason and "channel dim" in group.inexact_reason
    assert "cumsum" in graph.report()
    assert graph.group("b").exact and graph.group("b").inexact_reason is None


def test_layernorm_statistics_are_the_inexact_reason():
    graph = DependencyGraph.build(_NormNet().eval(), torch.randn(2, 4))
    group = graph.group("fc1")
    assert not group.exact
    assert "normalization statistics" in group.inexact_reason and "ln" in group.inexact_reason
    assert f"[inexact: {group.inexact_reason}]" in graph.report()
