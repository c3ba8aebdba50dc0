"""One test per topology: the groups found, their index maps, and pruning equal to masking."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.prune._models import (
    ChunkNet,
    ConcatNet,
    DepthwiseNet,
    FlattenNet,
    GroupedNet,
    MiniViT,
    ResidualNet,
    SharedTwiceNet,
    SplitNet,
    randomize_norms,
)
from torchpare.prune import DependencyGraph, verify_pruning


def _members(group):
    return {(m.module_name, m.param_name, m.dim, m.role): m.index_map for m in group.members}


def _prune_and_verify(model, x, plan):
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    return graph


def test_concat_maps_each_branch_to_its_offset_in_the_consumer():
    model, x = randomize_norms(ConcatNet()).eval(), torch.randn(2, 3, 5, 5)
    graph = DependencyGraph.build(model, x)
    a, b = graph.group("a"), graph.group("b")
    assert (a.size, b.size) == (4, 6)
    assert _members(a)[("head", "weight", 1, "in")] == ((0,), (1,), (2,), (3,))
    assert _members(b)[("head", "weight", 1, "in")] == tuple((4 + i,) for i in range(6))
    assert _members(b)[("bn", "running_mean", 0, "out")][0] == (4,)
    _prune_and_verify(model, x, {"a": [1], "b": [0, 5]})
    assert model.head.in_channels == 7 and model.bn.num_features == 7


def test_flatten_after_conv_gives_each_channel_its_block_of_linear_columns():
    model, x = FlattenNet().eval(), torch.randn(2, 3, 3, 3)
    graph = DependencyGraph.build(model, x)
    cols = _members(graph.group("conv"))[("fc", "weight", 1, "in")]
    assert cols[1] == tuple(range(9, 18))
    _prune_and_verify(model, x, {"conv": [0, 2]})
    assert model.fc.in_features == 18


def test_depthwise_conv_ties_input_and_output_channel_and_shrinks_groups():
    model, x = randomize_norms(DepthwiseNet()).eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    assert [g.id for g in graph.groups()] == ["pw1"]
    assert ("dw", "weight", 0, "out") in _members(graph.group("pw1"))
    _prune_and_verify(model, x, {"pw1": [0, 3]})
    assert (model.dw.groups, model.dw.in_channels, model.dw.out_channels) == (4, 4, 4)


def test_grouped_conv_prunes_the_same_slot_in_every_group():
    model, x = GroupedNet().eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    c1, g = graph.group("c1"), graph.group("g")
    assert c1.size == 4 and _members(c1)[("c1", "weight", 0, "out")][1] == (1, 5)
    assert g.size == 3 and _members(g)[("g", "weight", 0, "out")][0] == (0, 3)
    _prune_and_verify(model, x, {"c1": [2], "g": [1]})
    assert (model.g.in_channels, model.g.out_channels, model.g.groups) == (6, 4, 2)


def test_module_called_twice_couples_both_uses():
    model, x = SharedTwiceNet().eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    assert {g.id for g in graph.groups()} == {"stem", "shared"}
    stem = _members(graph.group("stem"))
    assert ("shared", "weight", 1, "in") in stem
    _prune_and_verify(model, x, {"stem": [0], "shared": [2, 4]})
    assert (model.shared.in_channels, model.shared.out_channels) == (5, 4)


def test_residual_add_couples_stem_and_block_output():
    model, x = randomize_norms(ResidualNet()).eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    stream = _members(graph.group("stem"))
    assert {
        ("conv2", "weight", 0, "out"),
        ("bn2", "weight", 0, "out"),
        ("head", "weight", 1, "in"),
        ("conv1", "weight", 1, "in"),
    } <= set(stream)
    _prune_and_verify(model, x, {"stem": [1, 2], "conv1": [0]})
    assert model.head.in_features == 4 and model.bn1.num_features == 4


def test_chunk_couples_the_ith_channel_of_each_half():
    model, x = ChunkNet().eval(), torch.randn(2, 4)
    graph = DependencyGraph.build(model, x)
    up = graph.group("up")
    assert up.size == 6 and _members(up)[("up", "weight", 0, "out")][2] == (2, 8)
    _prune_and_verify(model, x, {"up": [0, 5]})
    assert model.up.out_features == 8 and model.down.in_features == 4


def test_split_with_fixed_sizes_blocks_the_channels_and_says_why():
    graph = DependencyGraph.build(SplitNet().eval(), torch.randn(2, 4))
    assert graph.groups() == []
    assert "split with fixed sizes along channels" in graph.group("up").blocked_by
    assert "split" in graph.report()


def test_vit_like_stream_slices_class_token_and_position_embedding_on_hidden_dim():
    model, x = MiniViT().eval(), torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    stream = graph.group("patch")
    members = _members(stream)
    assert members[("", "cls", 2, "out")][3] == (3,) and ("", "pos", 2, "out") in members
    assert not stream.exact  # LayerNorm statistics read the hidden channels
    assert graph.group("fc1").exact
    _prune_and_verify(model, x, {"fc1": [0, 1, 2]})
    graph.prune({"patch": [0, 7]})
    assert model.cls.shape == (1, 1, 6) and model.pos.shape == (1, 5, 6)
    assert model.norm.normalized_shape == (6,)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("unbatched", [False, True])
def test_conv_on_unbatched_input_reads_channels_on_dim_zero(unbatched):
    model = nn.Sequential(nn.Conv1d(2, 4, 1), nn.ReLU(), nn.Conv1d(4, 3, 1))
    x = torch.randn(2, 5) if unbatched else torch.randn(1, 2, 5)
    _prune_and_verify(model, x, {"0": [1]})
    assert model[2].in_channels == 3


def test_matmul_with_a_transposed_parameter_is_a_linear_layer():
    class TLinear(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(o, i))
            self.bias = nn.Parameter(torch.randn(o))

        def forward(self, x):
            return x @ self.weight.T + self.bias

    model = nn.Sequential(TLinear(3, 5), nn.ReLU(), TLinear(5, 2))
    x = torch.randn(2, 3)
    graph = DependencyGraph.build(model, x)
    members = _members(graph.group("0"))
    assert {("0", "weight", 0, "out"), ("0", "bias", 0, "out"), ("2", "weight", 1, "in")} <= set(members)
    _prune_and_verify(model, x, {"0": [1, 4]})
    assert model[0].weight.shape == (3, 3) and model[2].weight.shape == (2, 3)


def test_grouped_conv_pruned_down_to_one_input_per_group_keeps_its_groups():
    model, x = GroupedNet().eval(), torch.randn(2, 3, 4, 4)
    graph = _prune_and_verify(model, x, {"c1": [0, 1, 2]})
    assert (model.g.in_channels, model.g.out_channels, model.g.groups) == (2, 6, 2)
    assert model(x).shape == (2, 2, 4, 4)
    assert graph.group("c1").size == 2  # now depthwise-like: one input channel per group


def test_position_table_sliced_to_the_sequence_length_is_pruned_whole_along_hidden():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.pos = nn.Parameter(torch.randn(1, 16, 6))  # longer than the input
            self.fc = nn.Linear(6, 3)

        def forward(self, ids):
            return self.fc(torch.relu(self.emb(ids) + self.pos[:, : ids.shape[1]]))

    model, ids = Seq().eval(), torch.tensor([[1, 2, 3, 4]])
    graph = DependencyGraph.build(model, ids)
    assert ("", "pos", 2, "out") in _members(graph.group("emb"))
    _prune_and_verify(model, ids, {"emb": [0, 5]})
    assert model.pos.shape == (1, 16, 4) and model(torch.tensor([[1] * 16])).shape == (1, 16, 3)
