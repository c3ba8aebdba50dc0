"""Property: on random small CNNs, any valid random plan prunes to a model equal to the masked original."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tests.prune._models import randomize_norms
from torchpare.prune import DependencyGraph, verify_pruning

OPS = ("conv", "depthwise", "grouped", "bn", "groupnorm", "residual", "concat", "gate", "pool")


class RandomNet(nn.Module):
    """A chain of randomly chosen blocks; channel counts are tracked as they change."""

    def __init__(self, ops: list[str], widths: list[int]) -> None:
        super().__init__()
        self.ops = ops
        self.layers = nn.ModuleList()
        c = 4
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        for op, w in zip(ops, widths):
            if op == "conv":
                self.layers.append(nn.Conv2d(c, w, 3, padding=1))
                c = w
            elif op == "depthwise":
                self.layers.append(nn.Conv2d(c, c, 3, padding=1, groups=c))
            elif op == "grouped":
                self.layers.append(nn.Conv2d(c, 2 * w, 1))
                self.layers.append(nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=2))
                c = 2 * w
            elif op == "bn":
                self.layers.append(nn.BatchNorm2d(c))
            elif op == "groupnorm":
                self.layers.append(nn.Conv2d(c, 2 * w, 1))
                self.layers.append(nn.GroupNorm(2, 2 * w))
                c = 2 * w
            elif op == "residual":
                self.layers.append(
                    nn.Sequential(nn.Conv2d(c, w, 1), nn.ReLU(), nn.Conv2d(w, c, 3, padding=1))
                )
            elif op == "concat":
                self.layers.append(nn.Conv2d(c, w, 1))
                c = c + w
            elif op == "gate":
                self.layers.append(nn.Conv2d(c, 2 * w, 1))
                c = w
            else:
                self.layers.append(nn.Identity())
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        layers = iter(self.layers)
        for op in self.ops:
            if op in ("grouped", "groupnorm"):
                h = next(layers)(h)
                h = torch.relu(next(layers)(h))
            elif op == "residual":
                h = h + next(layers)(h)
            elif op == "concat":
                h = torch.cat([h, torch.relu(next(layers)(h))], dim=1)
            elif op == "gate":
                a, b = next(layers)(h).chunk(2, dim=1)
                h = a * torch.sigmoid(b)
            elif op == "pool":
                next(layers)
                h = nn.functional.max_pool2d(h, 2, ceil_mode=True)
            else:
                h = torch.relu(next(layers)(h))
        return self.head(h.mean(dim=(2, 3)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6),
    widths=st.lists(st.integers(2, 5), min_size=6, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_random_plans_on_random_nets_match_the_masked_original(ops, widths, seed):
    torch.manual_seed(seed)
    model = randomize_norms(RandomNet(ops, widths)).eval()
    x = torch.randn(2, 3, 6, 6)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    rng = random.Random(seed)
    plan = {g.id: rng.sample(range(g.size), rng.randint(1, g.size - 1)) for g in graph.groups() if g.size > 1}
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    assert model(x).shape == (2, 3)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=8),
    widths=st.lists(st.integers(2, 6), min_size=8, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_many_random_plans_on_deeper_random_nets_match_the_masked_original(ops, widths, seed):
    test_random_plans_on_random_nets_match_the_masked_original.hypothesis.inner_test(ops, widths, seed)
