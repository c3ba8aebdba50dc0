"""The ShuffleNet-V2-like zoo model: shape, registration, and what the graph can prune in it."""

from __future__ import annotations

import copy

import torch

from torchpare.prune import DependencyGraph, verify_pruning
from torchpare.registry import MODELS
from torchpare.zoo import ZOO, ShuffleNetV2Like, channel_shuffle


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_shufflenet_is_registered_and_runs():
    assert isinstance(MODELS.build({"type": "ShuffleNetV2Like", "width": 4}), ShuffleNetV2Like)
    model, x = ZOO["shufflenetv2"]()
    assert model(x).shape == (2, 10)


def test_branch_inner_channels_prune_exactly_and_shuffled_channels_are_blocked_with_the_reason():
    torch.manual_seed(0)
    model, x = ZOO["shufflenetv2"]()
    graph = DependencyGraph.build(model, x)
    ids = {g.id for g in graph.groups()}
    assert {"stages.0.branch2.0.conv", "stages.3.branch2.0.conv", "last.conv"} <= ids
    shuffled = graph.group("stages.1.branch2.2.conv")
    assert shuffled.blocked_by is not None and "view" in shuffled.blocked_by
    plan = {g.id: list(range(0, g.size, 2)) for g in graph.groups()}
    original = copy.deepcopy(model)
    graph.prune(plan)
    assert model.stages[0].branch2[0].conv.out_channels == 4
    assert verify_pruning(original, model, x, plan) <= 1e-4
