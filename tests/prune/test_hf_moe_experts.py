"""Issue 14: each expert of a mixture-of-experts layer (Mixtral, Qwen2-MoE) is a prunable group of its own.

Fused experts (``gate_up_proj (E, 2I, H)``) hold one width for all experts; ``prune()`` splits them into
``SplitExperts`` (one ``ExpertFFN`` per expert), prunes each expert's hidden units on its own, and puts
the fused layout back where all experts kept one width. Router and number of experts never change.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from torchpare.prune import (  # noqa: E402
    DependencyGraph,
    count,
    from_pretrained,
    load_pruned,
    plain_format_problems,
    prune,
    prune_by_plan,
    pruning_record,
    save_pretrained,
    save_pruned,
)
from torchpare.prune.moe_experts import fuse_experts, split_experts  # noqa: E402
from torchpare.prune.rules.split_experts import SplitExperts  # noqa: E402
from torchpare.zoo.hf import hf_tiny, hf_tiny_inputs  # noqa: E402

MOE = ["mixtral", "qwen2_moe"]
# dead units per expert: different, and not multiples of 8 (the fused layout's blocks)
DEAD = [5, 11]


def _experts(model):
    return [layer.mlp.experts for layer in model.model.layers]


def _kill_units(model):
    """Zero the gate/up rows and down columns of the first DEAD[e] units of expert e, every layer."""
    with torch.no_grad():
        for experts in _experts(model):
            inter = experts.down_proj.shape[2]
            for e, n in enumerate(DEAD):
                experts.gate_up_proj[e, :n] = 0
                experts.gate_up_proj[e, inter : inter + n] = 0
                experts.down_proj[e, :, :n] = 0


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _logits(model, length):
    return model(**hf_tiny_inputs("text", length)).logits


@pytest.mark.parametrize("name", MOE)
def test_dead_units_zeroed_per_expert_are_removed_exactly(name):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    _kill_units(model)
    original = copy.deepcopy(model)
    assert split_experts(model) == [f"model.layers.{i}.mlp.experts" for i in range(2)]
    graph = DependencyGraph.build(model, inputs)
    groups = {g.id: g for g in graph.groups()}
    plan = {f"model.layers.{i}.mlp.experts.{e}": list(range(n)) for i in range(2) for e, n in enumerate(DEAD)}
    assert all(groups[gid].exact for gid in plan), graph.report()
    prune_by_plan(model, inputs, plan)
    for experts, before in zip(_experts(model), _experts(original)):
        assert isinstance(experts, SplitExperts)
        assert experts.widths == [before.intermediate_dim - n for n in DEAD]
    for length in (6, 9):
        torch.testing.assert_close(_logits(model, length), _logits(original, length), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MOE)
def test_prune_gives_experts_their_own_widths_and_keeps_router_and_expert_count(name):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    with torch.no_grad():  # expert 1 of every layer: half its units dead
        for experts in _experts(model):
            half = experts.down_proj.shape[2] // 2
            experts.down_proj[1, :, :half] = 0
    original = copy.deepcopy(model)
    model, summary = _quiet(prune, model, inputs, target_params_ratio=0.8, units=("ffn",))
    for experts, before, layer, old in zip(
        _experts(model), _experts(original), model.model.layers, original.model.layers
    ):
        assert isinstance(experts, SplitExperts)
        widths = experts.widths
        assert len(widths) == experts.num_experts == before.num_experts
        assert len(set(widths)) > 1 and max(widths) < before.intermediate_dim
        assert torch.equal(layer.mlp.gate.weight, old.mlp.gate.weight)  # the router is untouched
        assert layer.mlp.gate.top_k == old.mlp.gate.top_k
    # each expert is scored on its own (magnitude): the one with more dead units keeps fewer
    for experts in _experts(model):
        assert experts.widths[1] < experts.widths[0], experts.widths
    for length in (6, 9):
        assert torch.isfinite(_logits(model, length)).all()


@pytest.mark.parametrize("name", MOE)
def test_pruned_moe_saves_and_reloads_in_both_formats_and_pickles(name, tmp_path):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    _kill_units(model)
    with pytest.warns(UserWarning, match="experts of their own widths"):
        model, _ = prune(model, inputs, target_params_ratio=0.8, units=("ffn",))
    assert any("experts of their own widths" in p for p in plain_format_problems(model))
    want = {n: _logits(model, n) for n in (6, 9)}
    save_pruned(model, tmp_path / "pruned")
    fresh, _ = hf_tiny(name)
    again = load_pruned(tmp_path / "pruned", fresh)
    _quiet(save_pretrained, model, tmp_path / "hf")
    reloaded = _quiet(from_pretrained, tmp_path / "hf")
    unpickled = pickle.loads(pickle.dumps(model))
    for other in (again, reloaded, unpickled, copy.deepcopy(model)):
        assert [type(x).__name__ for x in _experts(other)] == ["SplitExperts"] * 2
        for n, logits in want.items():
            torch.testing.assert_close(_logits(other, n), logits, atol=1e-5, rtol=0)


def test_experts_that_keep_one_width_keep_the_fused_layout_and_plain_format(tmp_path):
    from transformers import MixtralForCausalLM

    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    fused = type(_experts(model)[0])
    model, _ = _quiet(prune, model, inputs, target_params_ratio=0.9, units=("kv_head",))  # experts kept
    assert [type(x) for x in _experts(model)] == [fused, fused]
    ops = [s["restructure"]["op"] for s in pruning_record(model)["steps"] if "restructure" in s]
    assert ops == ["split_experts", "fuse_experts"]
    assert plain_format_problems(model) == []
    model.save_pretrained(tmp_path)
    plain = MixtralForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(plain(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MOE)
def test_split_and_fused_experts_give_the_same_outputs_and_counts(name):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    before, logits = count(model, inputs), model(**inputs).logits
    split_experts(model)
    assert count(model, inputs) == before  # grouped_mm FLOPs are counted as the experts loop's
    torch.testing.assert_close(model(**inputs).logits, logits, atol=1e-5, rtol=1e-5)
    assert len(fuse_experts(model)) == 2
    torch.testing.assert_close(model(**inputs).logits, logits, atol=1e-5, rtol=1e-5)


def test_busy_experts_keep_more_width_under_taylor():
    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    with torch.no_grad():  # the router sends every token to expert 0 (top-1): expert 1 is idle
        for layer in model.model.layers:
            layer.mlp.gate.weight.zero_()
            layer.mlp.gate.weight[0] = 1e-3
    data = [{**inputs, "labels": inputs["input_ids"]}]
    model, _ = _quiet(
        prune, model, inputs, importance="taylor", data=data, target_params_ratio=0.8, units=("ffn",),
        round_to=1,  # exact counts: the default multiples of 16 could round both experts to one width
    )
    for experts in _experts(model):
        busy, idle = experts.widths
        assert busy > idle, experts.widths


def test_split_experts_rejects_a_module_that_is_not_fused_experts():
    model, _ = hf_tiny("mixtral")
    with pytest.raises(ValueError, match="cannot be split"):
        split_experts(model, ["model.layers.0.mlp.gate"])
    with pytest.raises(ValueError, match="cannot be fused"):
        split_experts(model, ["model.layers.0.mlp.experts"])
        prune_by_plan(model, hf_tiny_inputs("text"), {"model.layers.0.mlp.experts.0": [0]})
        fuse_experts(model, ["model.layers.0.mlp.experts"])


def test_split_experts_pruned_to_one_width_fuse_back_with_the_same_outputs():
    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    fused = type(_experts(model)[0])
    with torch.no_grad():
        for experts in _experts(model):
            experts.down_proj[:, :, :8] = 0  # the same 8 dead units in every expert
    original = copy.deepcopy(model)
    split_experts(model)
    plan = {f"model.layers.{i}.mlp.experts.{e}": list(range(8)) for i in range(2) for e in range(2)}
    prune_by_plan(model, inputs, plan)
    assert fuse_experts(model) == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert all(type(x) is fused and x.down_proj.shape[2] == x.intermediate_dim == 56 for x in _experts(model))
    for length in (6, 9):
        torch.testing.assert_close(_logits(model, length), _logits(original, length), atol=1e-5, rtol=0)


@pytest.mark.parametrize("round_to", [None, 1])  # None: one width, fused back by prune() and apply() alike
def test_summary_plans_with_expert_ids_replay_on_a_fresh_model(tmp_path, round_to):
    torch.manual_seed(0)
    model, inputs = hf_tiny("qwen2_moe")
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for experts in _experts(model):
            experts.down_proj[1, :, :8] = 0
    model, summary = _quiet(prune, model, inputs, target_params_ratio=0.85, units=("ffn",), round_to=round_to)
    assert any(gid.endswith("mlp.experts.1") for plan in summary.plans for gid in plan)
    with torch.no_grad():
        for experts in _experts(fresh):
            experts.down_proj[1, :, :8] = 0
    again = _quiet(summary.apply, fresh, inputs)
    assert [getattr(x, "widths", None) for x in _experts(again)] == [getattr(x, "widths", None) for x in _experts(model)]
    save_pruned(again, tmp_path)
    reloaded = load_pruned(tmp_path, hf_tiny("qwen2_moe")[0].eval())
    torch.testing.assert_close(reloaded(**inputs).logits, again(**inputs).logits, atol=1e-5, rtol=0)


def test_ignored_experts_stay_fused():
    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    fused = type(_experts(model)[0])
    with torch.no_grad():
        for experts in _experts(model):
            experts.down_proj[1, :, :32] = 0
    model, _ = _quiet(
        prune, model, inputs, target_params_ratio=0.85, units=("ffn",), ignored=["model.layers.0.mlp.experts"]
    )
    assert type(_experts(model)[0]) is fused and _experts(model)[0].down_proj.shape[2] == 64
    assert isinstance(_experts(model)[1], SplitExperts)


# OLMoE shares the layout and splits the same way (one-off run); its tiny build takes ~12 s, so not here
_MORE = {
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(num_experts=4, moe_intermediate_size=16, head_dim=8)),
}


@pytest.mark.parametrize("name", sorted(_MORE))
def test_other_fused_moe_families_split_and_remove_dead_units_exactly(name):
    import transformers

    config_name, model_name, extra = _MORE[name]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, num_experts_per_tok=2, eos_token_id=2, **extra, attn_implementation="eager",
    )
    model = _quiet(getattr(transformers, model_name), config).eval()
    _kill_units(model)
    original = copy.deepcopy(model)
    inputs = hf_tiny_inputs("text")
    plan = {f"model.layers.0.mlp.experts.{e}": list(range(n)) for e, n in enumerate(DEAD)}
    prune_by_plan(model, inputs, plan)  # ids of single experts: the module is split first
    experts = _experts(model)[0]
    assert isinstance(experts, SplitExperts) and experts.num_experts == 4
    assert experts.widths[:2] == [_experts(original)[0].intermediate_dim - n for n in DEAD]
    for length in (6, 9):
        torch.testing.assert_close(_logits(model, length), _logits(original, length), atol=1e-5, rtol=0)


def test_traced_split_experts_do_not_depend_on_the_experts_the_trace_inputs_hit():
    torch.manual_seed(0)
    experts = SplitExperts(2, 4, [3, 2], torch.nn.SiLU())
    for p in experts.parameters():
        torch.nn.init.normal_(p)
    x, weights = torch.randn(5, 4), torch.rand(5, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning
        traced = torch.jit.trace(experts, (x, torch.zeros(5, 1, dtype=torch.long), weights))  # expert 0 only
    mixed = torch.tensor([[0], [1], [1], [0], [1]])
    torch.testing.assert_close(traced(x, mixed, weights), experts(x, mixed, weights), atol=1e-6, rtol=1e-6)


@pytest.mark.slow  # ~5-14 s: the ONNX export of a whole model
def test_pruned_split_mixtral_exports_to_onnx_with_dynamic_axes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from torchpare.prune import export_onnx

    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    _kill_units(model)
    split_experts(model)
    plan = {f"model.layers.{i}.mlp.experts.{e}": list(range(n)) for i in range(2) for e, n in enumerate(DEAD)}
    prune_by_plan(model, inputs, plan)
    path = _quiet(export_onnx, model, inputs, tmp_path / "moe.onnx")
    session = ort.InferenceSession(str(path))
    other = hf_tiny_inputs("text", 9)
    got = session.run(None, {i.name: other[i.name].numpy() for i in session.get_inputs()})[0]
    assert abs(got - _logits(model, 9).detach().numpy()).max() <= 1e-4
