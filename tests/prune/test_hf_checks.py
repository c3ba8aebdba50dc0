"""Checks a user can trust: prune() returns models that run, honest reasons and warnings, unit kinds,
tolerances scaled to the outputs, attributes that follow the pruning, mixture-of-experts units."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("transformers")

from torchpare.prune import prune  # noqa: E402
from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.prune.rules.split_experts import SplitExperts  # noqa: E402
from torchpare.prune.verify import (  # noqa: E402
    PrunedForwardError,
    PruningMismatchError,
    check_runs,
    verify_pruning,
)
from torchpare.zoo.hf import hf_tiny  # noqa: E402


def _quiet_prune(model, inputs, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = prune(model, inputs, **kwargs)
    return (*out, [str(w.message) for w in caught])


def test_segformer_prunes_its_last_stage_width_and_the_classifier_still_runs():
    """Issue 14: the classifier reshapes to config.hidden_sizes[-1] (`shape '[2, -1, 64]' is invalid`)."""
    torch.manual_seed(0)
    model, inputs = hf_tiny("segformer")
    model, summary, messages = _quiet_prune(model, inputs, target_params_ratio=0.7)
    before, after = summary.groups["segformer.stages.1.patch_embeddings.proj"]
    assert after < before
    assert model.config.hidden_sizes[-1] == after
    assert not [m for m in messages if "fail its forward" in m], messages
    assert model(**inputs).logits.shape == (2, 3)


class _HardCodedWidth(nn.Module):
    """A forward that reshapes to a hard-coded width: pruning fc1's outputs breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).reshape(x.shape[0], -1, 16).squeeze(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(h))))


def test_prune_leaves_out_a_group_that_breaks_the_forward_and_says_which():
    torch.manual_seed(0)
    model, x = _HardCodedWidth(), torch.randn(3, 8)
    model, summary, messages = _quiet_prune(model, x, target_params_ratio=0.8)
    assert model.fc1.out_features == 16 and model.fc2.out_features < 16
    assert any("group 'fc1'" in m and "fail its forward" in m for m in messages), messages
    assert model(x).shape == (3, 2)


def test_a_forward_error_after_pruning_is_a_pruned_forward_error_naming_the_groups():
    pruned = nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 2))  # as if a rule had missed fc2's columns
    with pytest.raises(PrunedForwardError, match=r"groups \['0'\].*mat1 and mat2") as err:
        check_runs(pruned, torch.randn(2, 4), groups=["0"])
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_verify_pruning_tolerance_scales_with_the_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(300.0)  # outputs around 1e9: float32 rounding alone differs by far more than 1e-5
    x = torch.randn(8, 64)
    pruned = copy.deepcopy(net)
    plan = {"0": list(range(0, 64, 3)), "2": list(range(1, 64, 5))}
    DependencyGraph.build(pruned, x).prune(plan)
    assert verify_pruning(net, pruned, x, plan) > 1e-5  # the absolute difference is large...
    with pytest.raises(PruningMismatchError, match="rtol=0"):
        verify_pruning(net, pruned, x, plan, rtol=0.0)  # ...and only the old absolute check flags it
    with torch.no_grad():
        pruned[4].weight[0] += 1e-3 * pruned[4].weight.abs().max()  # a real mismatch is still caught
    with pytest.raises(PruningMismatchError, match=r"at output <output>"):
        verify_pruning(net, pruned, x, plan)


def test_blocked_reason_of_a_bias_computed_from_parameters_names_it():
    class CatBias(nn.Module):  # Swin-V2 style: qkv bias concatenated from parameters in the forward
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(6, 4))
            self.q_bias, self.v_bias = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.weight, torch.cat([self.q_bias, self.v_bias]))

    graph = DependencyGraph.build(
        nn.Sequential(nn.Linear(4, 4), CatBias(), nn.Linear(6, 2)), torch.randn(2, 4)
    )
    report = graph.report()
    assert "bias is computed from a parameter" in report, report
    assert "weight is not a parameter" not in report


def test_units_ffn_and_heads_keep_the_hidden_width():
    torch.manual_seed(0)
    model, inputs = hf_tiny("llama")
    model, summary, _ = _quiet_prune(
        model, inputs, target_params_ratio=0.85, units=("head", "kv_head", "ffn"), global_pruning=False
    )
    assert model.model.embed_tokens.embedding_dim == 32
    assert summary.groups["model.embed_tokens"] == (32, 32)
    assert model.model.layers[0].mlp.up_proj.out_features < 64
    assert model(**inputs).logits.shape == (2, 6, 64)
    only_hidden = prune(hf_tiny("llama")[0], inputs, target_params_ratio=0.9, units=("hidden",))[1]
    assert [gid for gid, (b, a) in only_hidden.groups.items() if a < b] == ["model.embed_tokens"]
    with pytest.raises(ValueError, match=r"unknown unit kind\(s\) \['mlp'\]"):
        prune(hf_tiny("llama")[0], inputs, target_params_ratio=0.9, units=("mlp",))


@pytest.mark.parametrize(
    ("name", "path", "attr"),
    [
        ("distilbert", "distilbert.transformer.layer.0.attention", "dim"),
        ("opt", "model.decoder.layers.0.self_attn", "embed_dim"),
        ("whisper", "model.decoder.layers.0.encoder_attn", "embed_dim"),
        ("falcon_gqa", "transformer.h.0.self_attention", "hidden_size"),
        ("stablelm", "model.layers.0.self_attn", "hidden_size"),
    ],
)
def test_attention_width_attributes_follow_hidden_and_head_pruning(name, path, attr):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    graph = DependencyGraph.build(model, inputs)
    hidden = next(
        g for g in graph.groups() if g.unit == "channel" and any(path in m.module_name for m in g.members)
    )
    heads = next(g for g in graph.groups() if g.unit in ("head", "kv_head") and g.id.startswith(path))
    graph.prune({hidden.id: [0, 1, 2], heads.id: [0]})
    attn = model.get_submodule(path)
    assert getattr(attn, attr) == 32 - 3
    if name == "falcon_gqa":  # Falcon: head counts agree with the fused weight
        n_q = attn.dense.in_features // attn.head_dim
        assert (attn.num_heads, attn.num_kv_heads) == (n_q, n_q // 2) == (2, 1)
        assert attn.query_key_value.out_features == (attn.num_heads + 2 * attn.num_kv_heads) * attn.head_dim
    check_runs(model, inputs)


def _config_heads_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
    """A LLaMA attention forward that reads its head counts from the shared config (never pruned)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    n_q, n_kv = self.config.num_attention_heads, self.config.num_key_value_heads
    bsz, q_len, _ = hidden_states.size()
    q = self.q_proj(hidden_states).view(bsz, q_len, n_q, self.head_dim).transpose(1, 2)
    k = self.k_proj(hidden_states).view(bsz, q_len, n_kv, self.head_dim).transpose(1, 2)
    v = self.v_proj(hidden_states).view(bsz, q_len, n_kv, self.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    k, v = repeat_kv(k, n_q // n_kv), repeat_kv(v, n_q // n_kv)
    w = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5, dim=-1)
    out = torch.matmul(w, v).transpose(1, 2).reshape(bsz, q_len, n_q * self.head_dim)
    return self.o_proj(out), w


def test_attention_without_head_units_is_warned_once_per_class_and_reported():
    """(This used BLOOM, whose heads now prune: a forward reading head counts from the config instead.)"""
    from transformers.models.llama.modeling_llama import LlamaAttention

    stale = type("ConfigHeadsAttention", (LlamaAttention,), {"forward": _config_heads_forward})
    stale.__module__ = "transformers.models.configheads.modeling_configheads"
    torch.manual_seed(0)
    model, inputs = hf_tiny("llama")  # two layers, one class
    for layer in model.model.layers:
        layer.self_attn.__class__ = stale
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = DependencyGraph.build(model, inputs)
    messages = [str(w.message) for w in caught if "no head unit" in str(w.message)]
    assert len(messages) == 1 and "ConfigHeadsAttention" in messages[0] and "1 more" in messages[0], messages
    assert "its forward fails after one head is removed" in messages[0]
    report = graph.report()
    assert "attention without head units" in report and "model.layers.1.self_attn" in report


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_expert_hidden_units_are_an_exact_group_and_the_router_is_intact(name):
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    experts = [g for g in graph.groups() if g.id.endswith("mlp.experts")]
    assert len(experts) == 2 and all(g.exact for g in experts), graph.report()
    plan = {g.id: list(range(0, g.size, 2)) for g in experts}  # half the width: stays 8-aligned
    graph.prune(plan)
    experts, before = model.model.layers[0].mlp.experts, original.model.layers[0].mlp.experts
    assert experts.num_experts == before.num_experts == experts.down_proj.shape[0]
    assert experts.down_proj.shape[2] < before.down_proj.shape[2] and experts.down_proj.shape[2] % 8 == 0
    assert experts.gate_up_proj.shape[1] == 2 * experts.down_proj.shape[2] == 2 * experts.intermediate_dim
    gate = model.model.layers[0].mlp.gate
    assert torch.equal(gate.weight, original.model.layers[0].mlp.gate.weight)
    assert verify_pruning(original, model, inputs, plan) <= 1e-5


@pytest.mark.parametrize("round_to", [8, 1, None])
def test_mixtral_prunes_experts_heads_and_hidden_width_with_round_to_and_runs(round_to):
    """The router's hidden_dim follows the hidden width, and every group is pruned without leaving one
    out. Experts that keep one width are fused again (grouped-matmul rows of 16 bytes); experts of their
    own widths are SplitExperts, which need no alignment, so round_to is no longer needed (this test
    pinned round_to=8 and one width for all experts before per-expert widths)."""
    torch.manual_seed(0)
    model, inputs = hf_tiny("mixtral")
    model, summary, messages = _quiet_prune(model, inputs, target_params_ratio=0.5, round_to=round_to)
    assert not [m for m in messages if "fail its forward" in m], messages
    width = model.model.embed_tokens.embedding_dim
    if round_to is None:  # the default multiple for a 32-wide group is 16: 16, or kept whole if closer
        assert width % 16 == 0, width
    else:
        assert width < 32
    for layer in (layer.mlp for layer in model.model.layers):
        assert layer.gate.hidden_dim == width
        if isinstance(layer.experts, SplitExperts):
            assert all(layer.experts.expert(e).gate_up_proj.shape[1] == width for e in range(2))
        else:
            assert layer.experts.gate_up_proj.shape[2] == width and layer.experts.down_proj.shape[2] % 4 == 0
    assert model(**inputs).logits.shape == (2, 6, 64)


def test_bloom_attention_output_joins_the_residual_width_it_is_added_to():
    """BLOOM adds the residual inside its attention module: the output projection's rows are the
    hidden channels, not a group of their own (which pruned alone broke the forward)."""
    torch.manual_seed(0)
    model, inputs = hf_tiny("bloom")
    graph = DependencyGraph.build(model, inputs)
    dense = [
        g
        for g in graph.all_groups()
        if any(m.module_name.endswith("self_attention.dense") for m in g.members)
    ]
    hidden = next(g for g in graph.groups() if g.id == "transformer.word_embeddings")
    assert all(g.id == hidden.id or g.unit == "head" for g in dense), [g.id for g in dense]
    graph.prune({hidden.id: [0, 5]})
    check_runs(model, inputs)
    assert model.transformer.h[0].self_attention.dense.out_features == 30


def _old_style_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
    """LlamaAttention.forward as transformers 4.4x wrote it: head counts and the merged width on self."""
    import math

    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    bsz, q_len, _ = hidden_states.size()
    q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
    k = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
    v = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    k, v = repeat_kv(k, self.num_key_value_groups), repeat_kv(v, self.num_key_value_groups)
    w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
    if attention_mask is not None:
        w = w + attention_mask[:, :, :, : k.shape[-2]]
    w = torch.softmax(w.float(), dim=-1).to(q.dtype)
    out = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(bsz, q_len, self.hidden_size)
    return self.o_proj(out), w


def test_an_older_forward_reading_hidden_size_as_the_heads_width_still_prunes_heads_exactly():
    """Across releases the same attribute changes meaning: transformers 4.4x reshaped the merged heads
    to ``self.hidden_size``. The probe finds which reading the forward needs; heads prune exactly."""
    from transformers.models.llama.modeling_llama import LlamaAttention

    old = type("OldStyleLlamaAttention", (LlamaAttention,), {"forward": _old_style_forward})
    old.__module__ = "transformers.models.oldstyle.modeling_oldstyle"
    torch.manual_seed(0)
    model, inputs = hf_tiny("llama")
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.__class__ = old
        attn.num_heads, attn.num_key_value_heads, attn.hidden_size = 4, 2, 32
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit == "kv_head"]
    assert len(heads) == 2, graph.report()
    plan = {heads[0].id: [0]}
    graph.prune(plan)
    attn = model.model.layers[0].self_attn
    assert (attn.num_heads, attn.num_key_value_heads, attn.hidden_size) == (2, 1, 16)
    assert verify_pruning(original, model, inputs, plan) <= 1e-5
    hidden = next(g for g in graph.groups() if g.id == "model.embed_tokens")
    graph.prune({hidden.id: [0, 1]})
    assert attn.hidden_size == 16 and attn.q_proj.in_features == 30
    check_runs(model, inputs)


def test_multi_query_falcon_keeps_its_kv_repeat_count_in_step_with_its_query_heads():
    """transformers 5.25 repeats Falcon's single kv head ``num_key_value_groups`` times; pruning one query
    head left it at 4 for 3 heads, so the probe blocked every head (the newest-versions lane caught it)."""
    torch.manual_seed(0)
    model, inputs = hf_tiny("falcon")
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit == "head"]
    assert heads, graph.report()
    plan = {heads[0].id: [0]}
    graph.prune(plan)
    attention = model.transformer.h[0].self_attention
    assert attention.num_heads == 3
    if hasattr(attention, "num_key_value_groups"):  # transformers >= 5.25
        assert attention.num_key_value_groups == attention.num_heads // attention.num_kv_heads
    assert verify_pruning(original, model, inputs, plan) <= 1e-5
