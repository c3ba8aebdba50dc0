"""Physical pruning: real smaller modules that run, train, and round-trip through state_dict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.prune._models import ResidualNet, randomize_norms
from torchpare.prune import DependencyGraph, mask_like_plan, prune_group, verify_pruning
from torchpare.prune.verify import PruningMismatchError


def _net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False),
        nn.GroupNorm(3, 6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def test_prune_group_replaces_parameters_and_updates_module_attributes():
    model, x = randomize_norms(_net()).eval(), torch.randn(2, 3, 5, 5)
    graph = DependencyGraph.build(model, x)
    old_weight = model[0].weight
    prune_group(graph, "0", [0, 7])
    assert model[0].weight is not old_weight and isinstance(model[0].weight, nn.Parameter)
    assert model[0].weight.requires_grad
    assert (model[0].out_channels, model[1].num_features, model[3].in_channels) == (6, 6, 6)
    assert model[1].running_var.shape == (6,)
    assert graph.group("0").size == 6  # rebuilt: same id, smaller size


def test_group_norm_prunes_whole_groups_and_keeps_channels_per_group():
    model, x = randomize_norms(_net()).eval(), torch.randn(2, 3, 5, 5)
    graph = DependencyGraph.build(model, x)
    assert graph.group("3").size == 3  # 6 channels in 3 groups of 2
    original = copy.deepcopy(model)
    graph.prune({"3": [1]})
    assert (model[4].num_groups, model[4].num_channels, model[8].in_features) == (2, 4, 4)
    assert verify_pruning(original, model, x, {"3": [1]}) <= 1e-5


def test_pruned_model_trains_one_step_and_its_state_dict_loads_into_a_fresh_pruned_copy():
    torch.manual_seed(0)
    model, x = randomize_norms(ResidualNet()), torch.randn(4, 3, 4, 4)
    fresh = copy.deepcopy(model)
    plan = {"stem": [0, 3], "conv1": [1]}
    DependencyGraph.build(model, x).prune(plan)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters())
    DependencyGraph.build(fresh, x).prune(plan)
    fresh.load_state_dict(model.state_dict())  # strict: same keys and shapes
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))


def test_plan_errors_name_the_group_and_its_size():
    model, x = _net().eval(), torch.randn(1, 3, 5, 5)
    graph = DependencyGraph.build(model, x)
    with pytest.raises(ValueError, match=r"group '0' has 8 channels; indices \[8\] are out of range"):
        graph.prune({"0": [8]})
    with pytest.raises(ValueError, match=r"removes all 8 channels of group '0'"):
        graph.prune({"0": range(8)})
    with pytest.raises(KeyError, match=r"no such group.*did you mean '0'"):
        graph.prune({"00": [1]})
    with pytest.raises(ValueError, match=r"group '8' is blocked \(model output\)"):
        graph.prune({"8": [0]})
    assert model[0].out_channels == 8  # nothing changed


def test_mask_like_plan_zeroes_consumer_columns_only():
    model, x = _net().eval(), torch.randn(1, 3, 5, 5)
    masked = mask_like_plan(model, {"0": [2]}, x)
    assert masked[3].weight[:, 2].abs().sum() == 0
    assert masked[0].weight[2].abs().sum() > 0  # the producer is untouched
    assert model[3].weight[:, 2].abs().sum() > 0  # the original too


def test_verify_pruning_reports_the_output_and_size_of_a_mismatch():
    model, x = _net().eval(), torch.randn(1, 3, 5, 5)
    pruned = copy.deepcopy(model)
    DependencyGraph.build(pruned, x).prune({"0": [2]})
    with torch.no_grad():
        pruned[8].bias += 1.0
    with pytest.raises(PruningMismatchError, match=r"differs from the masked original by 1 > atol=1e-05"):
        verify_pruning(model, pruned, x, {"0": [2]})


def test_verify_pruning_refuses_inexact_groups_with_an_explanation():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    x = torch.randn(2, 3)
    pruned = copy.deepcopy(model)
    graph = DependencyGraph.build(pruned, x)
    assert not graph.group("0").exact
    graph.prune({"0": [1]})
    assert pruned[1].normalized_shape == (3,) and pruned(x).shape == (2, 2)
    with pytest.raises(ValueError, match=r"group '0' is not exact"):
        verify_pruning(model, pruned, x, {"0": [1]})


def test_tied_parameters_stay_tied_after_pruning():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.mid = nn.Linear(6, 6)
            self.out = nn.Linear(6, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids):
            return self.out(torch.relu(self.mid(self.emb(ids))))

    model, ids = Tied().eval(), torch.tensor([[1, 2, 3]])
    graph = DependencyGraph.build(model, ids)
    assert [g.id for g in graph.groups()] == ["emb"]  # emb columns == out columns == mid rows
    original = copy.deepcopy(model)
    graph.prune({"emb": [0, 4]})
    assert model.out.weight is model.emb.weight and model.emb.weight.shape == (10, 4)
    assert model.mid.in_features == model.mid.out_features == 4
    assert verify_pruning(original, model, ids, {"emb": [0, 4]}) <= 1e-5
