"""Every zoo model: groups found, random plans pruned equal to masking, pruned model trains and reloads."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from tests.prune._models import randomize_norms
from torchpare.prune import DependencyGraph, verify_pruning
from torchpare.zoo import HF_MODELS, ZOO

try:
    import transformers  # noqa: F401

    _HAS_HF = True
except ImportError:  # the HF half of the zoo needs the optional dependency
    _HAS_HF = False

NAMES = [n for n in ZOO if _HAS_HF or n not in HF_MODELS]


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _first_float(out):
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    return next(v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point())


def _random_plan(graph, seed, exact_only=True):
    rng = random.Random(seed)
    plan = {}
    for g in graph.groups():
        if g.size > 1 and (g.exact or not exact_only):
            plan[g.id] = rng.sample(range(g.size), rng.randint(1, g.size - 1))
    return plan


def _build(name):
    torch.manual_seed(0)
    model, x = ZOO[name]()
    return randomize_norms(model).eval(), x


@pytest.mark.parametrize("name", NAMES)
def test_random_plan_matches_masked_original_then_trains_and_reloads(name):
    model, x = _build(name)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    assert graph.groups(), graph.report()
    plan = _random_plan(graph, seed=len(name))
    assert plan, graph.report()
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in original.parameters())

    model.train()
    loss = _first_float(_call(model, x)).float().pow(2).mean()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    fresh, _ = _build(name)
    DependencyGraph.build(fresh, x).prune(plan)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(_first_float(_call(fresh, x)), _first_float(_call(model, x)))


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("hf_")] + ["mobilenetv2"])
def test_plan_including_inexact_groups_still_runs_and_trains(name):
    model, x = _build(name)
    graph = DependencyGraph.build(model, x)
    plan = _random_plan(graph, seed=1, exact_only=False)
    graph.prune(plan)
    model.train()
    out = _first_float(_call(model, x))
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert (
        graph.group(next(iter(plan))).size
        < DependencyGraph.build(_build(name)[0], x).group(next(iter(plan))).size
    )
