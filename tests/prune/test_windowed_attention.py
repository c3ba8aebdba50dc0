"""Windowed attention with a relative position bias table: heads prune exactly, or are blocked, never broken."""

from __future__ import annotations

import copy

import torch
from torch import nn

from torchpare.prune import DependencyGraph, verify_pruning
from torchpare.zoo.swin import SwinLike, WindowAttention


def test_swin_heads_prune_exactly_and_slice_the_bias_table():
    torch.manual_seed(0)
    model = SwinLike().eval()
    x = torch.randn(2, 3, 16, 16)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    heads = [g for g in graph.groups() if g.unit == "head"]
    assert len(heads) == 2 and all(g.exact and g.size == 3 for g in heads), graph.report()
    plan = {heads[0].id: [0, 2], heads[1].id: [1]}
    graph.prune(plan)
    attn0, attn1 = model.blocks[0].attn, model.blocks[1].attn
    assert (attn0.num_heads, attn1.num_heads) == (1, 2)
    assert (
        attn0.relative_position_bias_table.shape[1] == 1 and attn1.relative_position_bias_table.shape[1] == 2
    )
    torch.testing.assert_close(
        attn0.relative_position_bias_table, original.blocks[0].attn.relative_position_bias_table[:, [1]]
    )
    assert verify_pruning(original, model, x, plan) <= 1e-5
    model.train()
    model(x).sum().backward()


class TorchvisionStyleAttention(WindowAttention):
    """Reshapes with the input width (``C // num_heads``), as torchvision's Swin does."""

    def forward(self, windows, mask=None):
        b, n, c = windows.shape
        qkv = self.qkv(windows).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


def test_attention_that_reshapes_with_the_input_width_is_blocked_with_a_reason_and_the_rest_prunes():
    torch.manual_seed(1)
    model = SwinLike().eval()
    for block in model.blocks:
        old = block.attn
        block.attn = TorchvisionStyleAttention(24, 4, 3)
        block.attn.load_state_dict(old.state_dict())
        block.shift = 0
    x = torch.randn(2, 3, 16, 16)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    assert not any(g.unit == "head" for g in graph.groups())
    assert "reshape" in graph.report()
    plan = {g.id: [0] for g in graph.groups() if g.exact and g.size > 1}
    assert plan
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5


def test_window_attention_with_a_per_head_mask_blocks_heads():
    class PerHeadMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(6, 12)
            self.attn = WindowAttention(12, 2, 3)

        def forward(self, x):
            return self.attn(self.inp(x), torch.zeros(1, 3, 4, 4))

    graph = DependencyGraph.build(PerHeadMask(), torch.randn(2, 4, 6))
    assert not any(g.unit == "head" for g in graph.groups())
    assert "head dim" in graph.report()
