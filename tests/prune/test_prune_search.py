"""prune()'s target search on the analytic plan cost (issue 18): a few real counts, the same plans.

The search ranks candidate plans with :class:`~torchpare.prune.plan_cost.PlanCost` (parameters from
the graph's slices, FLOPs from one per-module counted forward) and counts only the chosen plan for
real; these tests count the real counts (``FlopCounterMode`` passes), check the analytic cost against
real counts after surgery, and that the plans equal those of a search on real counts.
"""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from torch import nn

import torchpare.prune.budget as budget
import torchpare.prune.counting as counting
from torchpare.prune import DependencyGraph, apply_plan, count, prune
from torchpare.prune.plan_cost import PlanCost, count_by_module
from torchpare.zoo import ZOO

HF = ("hf_bert", "hf_gpt2", "hf_llama")


def _build(name: str):
    if name in HF or name.startswith("tiny:"):
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name.startswith("tiny:"):
        from torchpare.zoo.hf import hf_tiny

        return hf_tiny(name[5:])
    model, x = ZOO[name]()
    return model.eval(), x


@pytest.fixture
def real_counts(monkeypatch):
    """How many forwards ran under ``FlopCounterMode`` (a real count each)."""
    passes = []

    class Spy(counting.FlopCounterMode):
        def __enter__(self):
            passes.append(1)
            return super().__enter__()

    monkeypatch.setattr(counting, "FlopCounterMode", Spy)
    return passes


@pytest.mark.parametrize("name", ["resnet", "densenet", "mobilenetv2", "shufflenetv2", "tiny:llama"])
@pytest.mark.parametrize("target", ["target_flops_ratio", "target_params_ratio"])
@pytest.mark.filterwarnings("ignore:prune.*the pruned widths")
def test_prune_counts_a_few_plans_for_real_and_meets_the_target(name, target, real_counts):
    model, x = _build(name)
    _, summary = prune(model, x, **{target: 0.5})
    # the unpruned model, the chosen plan, the pruned model (before issue 18: 12-40 passes here)
    assert len(real_counts) <= 4
    assert summary.within_tolerance and abs(summary.achieved_ratio - 0.5) <= 0.02 * 0.5
    assert count(model, x) == {"params": summary.params_after, "flops": summary.flops_after}


def _random_plan(graph: DependencyGraph, rng: random.Random) -> dict[str, list[int]]:
    plan = {}
    for g in graph.groups():
        if g.size > 1 and rng.random() < 0.7:
            plan[g.id] = sorted(rng.sample(range(g.size), rng.randint(1, g.size - 1)))
    return plan


@pytest.mark.parametrize(
    "name",
    ["vgg", "resnet", "densenet", "mobilenetv2", "grouped_conv", "shared_conv", "shufflenetv2", "mlp",
     "vit", "swin", "swinv2", *HF, "tiny:t5", "tiny:bloom"],
)
def test_plan_cost_equals_the_real_count_after_surgery_for_random_plans(name):
    """Parameters are exact by construction; FLOPs are exact on every model here (layers scale with
    their kept weight entries, attention with its kept heads; T5 shares heads across blocks, GPT-2
    ties its embeddings)."""
    model, x = _build(name)
    graph = DependencyGraph.build(model, x)
    cost = PlanCost(graph, count_by_module(model, x))
    # Swin-V2's position-bias MLP is a channel group inside the attention module: its heads' FLOPs are
    # not claimed exact (they are, here), so a missed tolerance there is re-aimed, not accepted
    assert cost.exact_flops == (name != "swinv2")
    rng = random.Random(name)
    for _ in range(3):
        plan = _random_plan(graph, rng)
        assert cost(plan) == _count_applied(graph, model, x, plan), plan


def _count_applied(graph, model, x, plan):
    """count() of a deep copy of ``model`` with ``plan`` applied (``graph`` and ``model`` untouched)."""
    trial = copy.copy(graph)
    trial.model = copy.deepcopy(model)
    apply_plan(trial, plan)
    return count(trial.model, x)


@pytest.mark.parametrize("name", ["tiny:mixtral", "tiny:qwen2_moe"])
def test_plan_cost_counts_split_experts_parameters_exactly_and_their_flops_as_an_estimate(name):
    """Routed experts get as many rows as the router sends them, which moves with the pruned widths."""
    from torchpare.prune import split_experts

    model, x = _build(name)
    split_experts(model)  # as prune() does: one group per expert
    graph = DependencyGraph.build(model, x)
    cost = PlanCost(graph, count_by_module(model, x))
    assert not cost.exact_flops
    rng = random.Random(name)
    for _ in range(3):
        plan = _random_plan(graph, rng)
        real = _count_applied(graph, model, x, plan)
        assert cost(plan)["params"] == real["params"]
        assert abs(cost(plan)["flops"] - real["flops"]) <= 0.25 * real["flops"]


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "vit", "swinv2", "hf_gpt2"])
def test_count_by_module_adds_up_to_count(name):
    model, x = _build(name)
    counts = count_by_module(model, x)
    assert counts.totals == count(model, x)
    assert sum(sum(ops.values()) for ops in counts.by_module.values()) + counts.outside == counts.totals["flops"]


def test_count_by_module_counts_the_transformer_fast_path_as_count_does():
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 16)
    counts = count_by_module(model, x)
    assert counts.totals == count(model, x) and counts.totals["flops"] > 0
    assert torch.backends.mha.get_fastpath_enabled()  # restored


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "densenet", "hf_llama"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_flops_ratio": 0.5},
        {"target_params_ratio": 0.6},
        {"target_flops_ratio": 0.4, "global_pruning": False},
        {"target_flops_ratio": 0.5, "iterative_steps": 2},
    ],
)
@pytest.mark.filterwarnings("ignore:prune.*the pruned widths")
def test_search_on_the_estimate_finds_the_plans_of_a_search_on_real_counts(name, kwargs, monkeypatch):
    results = []
    for checks in (0, budget._EXACT_CHECKS):  # 0: no estimate-driven attempt, real counts throughout
        monkeypatch.setattr(budget, "_EXACT_CHECKS", checks)
        model, x = _build(name)
        _, summary = prune(model, x, **kwargs)
        results.append((summary.plans, summary.flops_after, summary.params_after))
    assert results[0] == results[1]


class _Gram(nn.Module):
    """``h @ h.T`` outside any attention module: its FLOPs shrink with the pruned channels of ``inp``,
    which no weight of its own shows (the estimate keeps them; the real counts correct it)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(16, 64), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(h @ h.transpose(1, 2))


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.9])
def test_a_wrong_estimate_is_corrected_by_real_counts_and_the_target_met(ratio, real_counts):
    torch.manual_seed(0)
    model, x = _Gram().eval(), torch.randn(2, 8, 16)
    graph = DependencyGraph.build(model, x)
    cost = PlanCost(graph, count_by_module(model, x))
    trial = copy.deepcopy(model)
    pruned = copy.copy(graph)
    pruned.model = trial
    apply_plan(pruned, {"inp": list(range(32))})
    assert not cost.exact_flops and cost({"inp": list(range(32))})["flops"] > count(trial, x)["flops"]
    real_counts.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tolerance warning
        _, summary = prune(model, x, target_flops_ratio=ratio, round_to=1)
    assert abs(summary.achieved_ratio - ratio) <= 0.02 * ratio
    assert len(real_counts) <= 2 + budget._EXACT_CHECKS  # unpruned, corrections, pruned


def test_plan_cost_names_an_unknown_group():
    model, x = _build("mlp")
    graph = DependencyGraph.build(model, x)
    cost = PlanCost(graph, count_by_module(model, x))
    assert cost({}) == count(model, x)
    with pytest.raises(KeyError, match="no prunable group 'nope'"):
        cost({"nope": [0]})


def test_a_checked_plan_that_fails_its_count_falls_back_to_the_search_on_real_counts(monkeypatch):
    model, x = _build("resnet")
    _, expected = prune(copy.deepcopy(model), x, target_flops_ratio=0.5)
    calls = []
    real_count = budget.count_by_module

    def flaky(trial, inputs):
        calls.append(1)
        if len(calls) == 2:  # the chosen plan's count (the first is the unpruned model's)
            raise RuntimeError("a kernel that does not take these widths")
        return real_count(trial, inputs)

    monkeypatch.setattr(budget, "count_by_module", flaky)
    _, summary = prune(model, x, target_flops_ratio=0.5)
    assert len(calls) > 4  # the fallback counted candidates for real
    assert summary.plans == expected.plans and summary.flops_after == expected.flops_after
