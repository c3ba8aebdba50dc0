"""Planning without copies (issue 18): the target search counts candidate plans on meta copies, and a
plan made on a meta model (``prune(..., dry_run=True)``) applies to the real weights later."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

import torchpare.prune.budget as budget
from torchpare.prune import DependencyGraph, PruneSummary, count, prune
from torchpare.prune.budget import MetaWeightsError
from torchpare.prune.counting import meta_copy, meta_inputs, on_meta
from torchpare.prune.importance import GroupImportance, L1Importance, RandomImportance
from torchpare.zoo.catalog import HF_MODELS, build_zoo_model

_HF = pytest.importorskip  # alias only to keep the skip reason readable below


def _build(name: str):
    if name in HF_MODELS:
        _HF("transformers")
    torch.manual_seed(0)
    return build_zoo_model(name)


class Precomputed(GroupImportance):
    """Scores computed beforehand (e.g. L1 on the real weights), served by group id."""

    def __init__(self, scores: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.scores = scores

    def __call__(self, model: nn.Module, group) -> torch.Tensor | None:
        return self.scores.get(group.id)


@pytest.mark.parametrize(
    "name", ["digits_small_cnn", "densenet", "grouped_conv", "vit", "swin", "hf_gpt2", "hf_bert"]
)
def test_count_on_a_meta_copy_equals_the_real_count(name):
    model, x = _build(name)
    try:
        meta = count(meta_copy(model), meta_inputs(x))
    except RuntimeError as exc:  # a forward that reads values (BERT's mask check): prune() falls back
        assert "meta" in str(exc) and name == "hf_bert"
        return
    assert meta == count(model, x)


def test_meta_copy_copies_no_weights_and_keeps_ties():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    net[1].weight = net[0].weight
    shadow = meta_copy(net)
    assert on_meta(shadow) and not on_meta(net)
    assert shadow[1].weight is shadow[0].weight and isinstance(shadow[1].weight, nn.Parameter)


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "swin", "hf_llama", "hf_bert"])
def test_search_on_meta_copies_finds_the_same_plans_as_deep_copies(name, monkeypatch):
    results = []
    for on_meta_trials in (False, True):
        monkeypatch.setattr(budget, "_TRIALS_ON_META", on_meta_trials)
        model, x = _build(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, summary = prune(model, x, target_flops_ratio=0.5)
        results.append((summary.plans, summary.flops_after, summary.params_after))
    assert results[0] == results[1]


def test_search_deep_copies_no_real_weights(monkeypatch):
    monkeypatch.setattr(budget, "_TRIALS_ON_META", True)
    model, x = _build("resnet")
    real_copies = []
    deepcopy = copy.deepcopy

    def spy(obj, memo=None, *args):
        if isinstance(obj, nn.Module) and memo is None and not on_meta(obj):
            real_copies.append(type(obj).__name__)
        return deepcopy(obj, memo, *args)

    monkeypatch.setattr(copy, "deepcopy", spy)
    _, summary = prune(model, x, target_flops_ratio=0.5)
    assert summary.plans and real_copies == []


def test_dry_run_leaves_the_model_untouched_and_apply_matches_a_direct_prune():
    model, x = _build("resnet")
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    same, plan = prune(model, x, target_flops_ratio=0.5, dry_run=True)
    assert same is model and plan.dry_run
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    direct, summary = prune(reference, x, target_flops_ratio=0.5)
    assert plan.plans == summary.plans and plan.flops_after == summary.flops_after
    saved = PruneSummary.from_dict(json.loads(json.dumps(plan.to_dict())))
    applied = saved.apply(model, x)
    assert count(applied, x) == count(direct, x)
    assert torch.allclose(applied(x), direct(x), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet", "hf_llama"])
@pytest.mark.filterwarnings("ignore:prune.*the pruned widths")
def test_plan_on_a_meta_model_applies_to_the_real_weights(name):
    """Magnitude scores computed on the real weights, the search on a meta model: same kept indices."""
    real, x = _build(name)
    graph = DependencyGraph.build(real, x)
    scores = {g.id: L1Importance()(real, g) for g in graph.groups()}
    meta_model = copy.deepcopy(real).to("meta")
    _, plan = prune(meta_model, x, importance=Precomputed(scores), target_flops_ratio=0.6, dry_run=True)
    assert on_meta(meta_model) and plan.plans
    direct, summary = prune(copy.deepcopy(real), x, importance="l1", target_flops_ratio=0.6)
    assert plan.plans == summary.plans
    applied = plan.apply(real, x)
    out = applied(**x).logits if isinstance(x, dict) else applied(x)
    ref = direct(**x).logits if isinstance(x, dict) else direct(x)
    assert torch.allclose(out, ref, atol=1e-5)
    if name == "hf_llama":
        assert applied.config.intermediate_size == direct.config.intermediate_size


def test_random_criterion_plans_a_meta_model_in_place():
    model, x = _build("vgg")
    meta_model = model.to("meta")
    pruned, summary = prune(meta_model, x, importance=RandomImportance(seed=0), target_params_ratio=0.5)
    assert pruned is meta_model and on_meta(pruned)
    assert abs(summary.params_ratio - 0.5) <= 0.02 * 0.5
    assert count(pruned, meta_inputs(x))["params"] == summary.params_after


def test_weight_criteria_on_a_meta_model_raise_a_clear_error():
    model, x = _build("vgg")
    meta_model = model.to("meta")
    with pytest.raises(MetaWeightsError, match="meta device.*importance='random'"):
        prune(meta_model, x, importance="l1", target_flops_ratio=0.5, dry_run=True)
    with pytest.raises(MetaWeightsError, match="meta device"):
        prune(meta_model, x, importance="taylor", target_flops_ratio=0.5, data=[(x, torch.zeros(2).long())])
    assert issubclass(MetaWeightsError, ValueError)


def test_dry_run_refuses_what_needs_real_weights():
    model, x = _build("vgg")
    with pytest.raises(MetaWeightsError, match="bn_calibration"):
        prune(model, x, target_flops_ratio=0.5, dry_run=True, bn_calibration=[x])
    with pytest.raises(MetaWeightsError, match="after the first step"):
        prune(model, x, target_flops_ratio=0.5, dry_run=True, iterative_steps=2)


def test_meta_llama_whose_heads_need_a_value_probe_plans_on_a_stand_in(monkeypatch):
    """The head probe needs values: on meta it runs on a random float32 stand-in of the attention
    module (it raised MetaWeightsError before issue 18's meta planning), so the plan applies to the
    real weights."""
    from torchpare.prune.rules import hf_head_probe

    real, x = _build("hf_llama")
    monkeypatch.setattr(hf_head_probe, "_PROBED", {})  # a fresh process: this class was never probed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, on_meta = prune(
            copy.deepcopy(real).to("meta"),
            x,
            importance=RandomImportance(seed=0),
            target_flops_ratio=0.5,
            dry_run=True,
        )
        pruned = on_meta.apply(copy.deepcopy(real), x)
    assert any(gid.endswith("heads") for step in on_meta.plans for gid in step)
    assert count(pruned, x)["flops"] == on_meta.flops_after
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, plan = prune(real, x, target_flops_ratio=0.5, dry_run=True)  # probes the real weights
    assert plan.plans and count(real, x)["flops"] == plan.flops_before


def test_dry_run_of_a_model_that_needs_values_plans_on_a_real_copy_with_a_warning():
    model, x = _build("hf_bert")  # its attention-mask check calls .item(): no meta forward
    reference = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="deep copy of the real model"):
        _, plan = prune(model, x, target_flops_ratio=0.5, dry_run=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, summary = prune(reference, x, target_flops_ratio=0.5)
    assert plan.plans == summary.plans
    assert count(plan.apply(model, x), x) == count(reference, x)
