"""Pruning the Hugging Face zoo: head groups, exactness, training, reload, generation, attributes."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.prune.rules.hf_attention import (  # noqa: E402
    ProjAttentionRule,
    UnsupportedAttentionError,
)
from torchpare.prune.verify import verify_pruning  # noqa: E402
from torchpare.zoo import hf  # noqa: E402

HF = ["hf_resnet", "hf_convnext", "hf_mobilenetv2", "hf_vit", "hf_bert", "hf_gpt2", "hf_llama"]
# model -> (unit of its attention groups, groups, units per group)
HEADS = {
    "hf_vit": ("head", 2, 4),
    "hf_bert": ("head", 2, 4),
    "hf_gpt2": ("head", 2, 4),
    "hf_llama": ("kv_head", 2, 2),
}


def _build(name: str, **kwargs: Any) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return getattr(hf, name)(**kwargs)


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs).logits


def _random_plan(graph: DependencyGraph, exact_only: bool, seed: int = 0) -> dict[str, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    plan = {}
    for group in graph.groups():
        if exact_only and not group.exact:
            continue
        k = max(1, min(group.size - 1, round(0.3 * group.size)))
        plan[group.id] = sorted(torch.randperm(group.size, generator=gen)[:k].tolist())
    return plan


def _train_step(model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = _logits(model, inputs)
    loss = logits.float().pow(2).mean()
    loss.backward()
    grads = [(p, p.grad) for p in model.parameters() if p.grad is not None]
    assert grads and all(g.shape == p.shape and torch.isfinite(g).all() for p, g in grads)
    opt.step()
    model.eval()
    return loss.item()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_attention_groups_are_whole_heads(name: str) -> None:
    model, inputs = _build(name)
    unit, n_groups, size = HEADS[name]
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit == unit]
    assert len(heads) == n_groups, graph.report()
    assert all(g.size == size and g.exact for g in heads)
    # Every member slice of a head unit covers whole heads (head_dim rows each), never single dims.
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    for group in heads:
        for member in group.members:
            assert all(len(ix) % head_dim == 0 and len(ix) > 0 for ix in member.index_map)


@pytest.mark.parametrize("name", HF)
def test_random_plan_on_exact_groups_matches_masked_original(name: str) -> None:
    model, inputs = _build(name)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    plan = _random_plan(graph, exact_only=True)
    assert plan, graph.report()
    graph.prune(plan)
    diff = verify_pruning(original, model, inputs, plan, atol=1e-5)
    assert diff <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in original.parameters())


@pytest.mark.parametrize("name", HF)
def test_pruned_model_trains_and_state_dict_round_trips(name: str) -> None:
    model, inputs = _build(name)
    graph = DependencyGraph.build(model, inputs)
    graph.prune(_random_plan(graph, exact_only=False, seed=1))
    loss = _train_step(model, inputs)
    assert torch.isfinite(torch.tensor(loss))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.data.zero_()
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(_logits(clone, inputs), _logits(model, inputs), rtol=0, atol=0)


def test_llama_kv_head_pruning_updates_attributes_and_keeps_config() -> None:
    model, inputs = _build("hf_llama")
    graph = DependencyGraph.build(model, inputs)
    kv = [g for g in graph.groups() if g.unit == "kv_head"]
    graph.prune({kv[0].id: [1]})  # layer 0 loses kv head 1 and its 2 query heads
    attn0, attn1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    assert (attn0.q_proj.out_features, attn0.k_proj.out_features, attn0.o_proj.in_features) == (16, 8, 16)
    assert attn0.num_key_value_groups == 2  # query heads per kv head is unchanged
    assert (attn1.q_proj.out_features, attn1.k_proj.out_features) == (32, 16)
    # The shared config still describes the unpruned layers; per-layer sizes live on the modules.
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)


def test_llama_generate_runs_after_pruning_kv_heads() -> None:
    model, inputs = _build("hf_llama")
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    layer0 = next(g for g in graph.groups() if g.unit == "kv_head" and g.id.startswith("model.layers.0."))
    plan = {layer0.id: [0]}  # layer 0 only: the layers now differ in kv heads (1 vs 2)
    graph.prune(plan)
    assert verify_pruning(original, model, inputs, plan) <= 1e-5
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)
    # A static cache sizes each layer from its first key states, so per-layer head counts work too.
    static = model.generate(**inputs, max_new_tokens=4, do_sample=False, cache_implementation="static")
    assert torch.equal(static, out)
    # Cached decoding agrees with a full forward of the generated sequence.
    mask = torch.cat([inputs["attention_mask"], torch.ones(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(input_ids=out[:, :-1], attention_mask=mask[:, :-1]).logits[:, -1].argmax(-1)
    assert torch.equal(full, out[:, -1])


def test_llama_with_sdpa_attention_prunes_exactly() -> None:
    model, inputs = _build("hf_llama", attn_implementation="sdpa")
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    plan = {g.id: [1] for g in graph.groups() if g.unit == "kv_head"}
    graph.prune(plan)
    assert verify_pruning(original, model, inputs, plan) <= 1e-5


def test_gpt2_head_pruning_updates_split_size_and_conv1d_sizes() -> None:
    model, inputs = _build("hf_gpt2")
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit == "head"]
    graph.prune({heads[1].id: [0, 2]})
    attn = model.transformer.h[1].attn
    assert (attn.num_heads, attn.split_size, attn.head_dim) == (2, 16, 8)
    assert tuple(attn.c_attn.weight.shape) == (32, 48) and attn.c_attn.nf == 48
    assert tuple(attn.c_proj.weight.shape) == (16, 32) and attn.c_proj.nx == 16
    assert model.transformer.h[0].attn.num_heads == 4
    assert verify_pruning(original, model, inputs, {heads[1].id: [0, 2]}) <= 1e-5
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == 10


def test_gpt2_conv1d_mlp_channels_are_sliced_on_the_transposed_dim() -> None:
    model, inputs = _build("hf_gpt2")
    graph = DependencyGraph.build(model, inputs)
    graph.prune({"transformer.h.0.mlp.c_fc": list(range(10))})
    mlp = model.transformer.h[0].mlp
    assert tuple(mlp.c_fc.weight.shape) == (32, 54) and (mlp.c_fc.nx, mlp.c_fc.nf) == (32, 54)
    assert tuple(mlp.c_proj.weight.shape) == (54, 32) and (mlp.c_proj.nx, mlp.c_proj.nf) == (54, 32)


@pytest.mark.parametrize("name", ["hf_bert", "hf_vit"])
def test_encoder_head_pruning_updates_head_counts(name: str) -> None:
    model, inputs = _build(name)
    graph = DependencyGraph.build(model, inputs)
    group = next(g for g in graph.groups() if g.unit == "head")
    graph.prune({group.id: [0, 3]})
    attn = model.get_submodule(group.id.split("#")[0].rsplit(".", 1)[0])  # "...attention.q_proj#heads"
    counts = {a: getattr(attn, a) for a in ("num_attention_heads", "all_head_size") if hasattr(attn, a)}
    assert counts and counts.get("num_attention_heads", 2) == 2
    assert counts.get("all_head_size", 16) == 16
    assert model.config.num_attention_heads == 4


def test_unsupported_attention_layout_is_blocked_with_the_parameter_named() -> None:
    class BiasTableAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_dim = 4
            self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)
            self.v_proj, self.o_proj = nn.Linear(8, 8), nn.Linear(8, 8)
            self.bias_table = nn.Parameter(torch.zeros(5, 2))  # per-head table the rule does not slice

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            q = self.q_proj(hidden_states) + self.k_proj(hidden_states) + self.bias_table.sum()
            return self.o_proj(q * self.v_proj(hidden_states))

    from torchpare.prune.rules import register_rule

    register_rule(BiasTableAttention, ProjAttentionRule(), override=True)
    model = nn.Sequential(nn.Linear(8, 8), BiasTableAttention(), nn.Linear(8, 2))
    graph = DependencyGraph.build(model, torch.randn(2, 8))
    assert "bias_table" in graph.report()
    assert not any(g.unit == "head" for g in graph.groups())
    assert issubclass(UnsupportedAttentionError, ValueError)


_TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
_GQA = dict(_TINY, num_key_value_heads=2)
# Attention classes matched by layout, not by name: (config, model class, config kwargs, head unit or
# None when the heads must be refused). The default run covers GQA + q_norm/k_norm, out_proj and
# q_lin/out_lin; the rest is the slow sweep behind docs/design/pruning-transformers.md.
FAMILIES = {
    "mistral": ("MistralConfig", "MistralForCausalLM", _GQA, "kv_head"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_GQA, head_dim=8), "kv_head"),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(_TINY, ffn_dim=64, word_embed_proj_dim=32), "head"),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        dict(vocab_size=64, dim=32, hidden_dim=64, n_layers=1, n_heads=4),
        "head",
    ),
}
SLOW_FAMILIES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _GQA, "kv_head"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_GQA, head_dim=8), "kv_head"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_GQA, head_dim=8), "kv_head"),
    "granite": ("GraniteConfig", "GraniteForCausalLM", _GQA, "kv_head"),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", _GQA, "kv_head"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(_GQA, num_local_experts=2), "kv_head"),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            _GQA,
            num_experts=2,
            num_experts_per_tok=1,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
        ),
        "kv_head",
    ),
    "phi": ("PhiConfig", "PhiForCausalLM", _TINY, "head"),
    "gptj": (
        "GPTJConfig",
        "GPTJForCausalLM",
        dict(vocab_size=64, n_embd=32, n_layer=1, n_head=4, rotary_dim=4),
        "head",
    ),
    "gpt_neo": (
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        dict(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, attention_types=[[["global"], 1]]),
        "head",
    ),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", _TINY, "head"),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", dict(_TINY, embedding_size=32), "head"),
    "bart": (
        "BartConfig",
        "BartForSequenceClassification",
        dict(
            vocab_size=64,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
        ),
        "head",
    ),
    "gpt_oss": (  # per-head attention sinks
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(_GQA, head_dim=8, intermediate_size=32, num_local_experts=2, num_experts_per_tok=1),
        "kv_head",
    ),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(_GQA, pad_token_id=0), None),  # q_norm spans all heads
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_GQA, pad_token_id=0), None),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", _TINY, "head"),
    "falcon": (
        "FalconConfig",
        "FalconForCausalLM",
        dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4),
        "head",  # multi-query: each query head is a unit, the shared kv head stays
    ),
    "bloom": (
        "BloomConfig",
        "BloomForCausalLM",
        dict(vocab_size=64, hidden_size=32, n_layer=1, n_head=4),
        "head",  # ALiBi rows follow the kept heads (rules/hf_alibi.py)
    ),
}


def _check_family(config_name: str, model_name: str, kwargs: dict[str, Any], unit: str | None) -> None:
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**kwargs, attn_implementation="eager")
    model = getattr(transformers, model_name)(config).eval()
    input_ids = torch.randint(3, 64, (2, 6))
    input_ids[:, -1] = 2  # an end-of-sequence token, which BART's classification head looks for
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit in ("head", "kv_head")]
    if unit is None:  # refused: no head group, and every group that remains is still exact to prune
        assert heads == [], graph.report()
    else:  # one group per attention module (BART: encoder self, decoder self, decoder cross)
        assert heads and {g.unit for g in heads} == {unit}, graph.report()
    plan = {g.id: [0] for g in graph.groups() if g.exact and g.size > 1}
    assert plan, graph.report()
    graph.prune(plan)
    assert verify_pruning(original, model, inputs, plan) <= 1e-5
    _train_step(model, inputs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_other_transformers_families_prune_whole_heads_exactly(family: str) -> None:
    _check_family(*FAMILIES[family])


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SLOW_FAMILIES))
def test_transformers_sweep_prunes_heads_exactly_or_refuses(family: str) -> None:
    _check_family(*SLOW_FAMILIES[family])


@pytest.mark.parametrize("name", ["hf_llama", "hf_gpt2"])
def test_pruned_transformer_reloads_with_save_pruned(name: str, tmp_path: Any) -> None:
    from torchpare.prune import load_pruned, prune_by_plan, save_pruned

    model, inputs = _build(name)
    fresh = copy.deepcopy(model)
    graph = DependencyGraph.build(copy.deepcopy(model), inputs)
    plan = {g.id: [0] for g in graph.groups()}  # heads and hidden channels of every layer
    pruned = prune_by_plan(model, inputs, plan)
    save_pruned(pruned, tmp_path)
    reloaded = load_pruned(tmp_path, fresh)
    with torch.no_grad():
        torch.testing.assert_close(_logits(reloaded, inputs), _logits(pruned, inputs), rtol=0, atol=0)
    if name == "hf_llama":
        assert reloaded.model.layers[0].self_attn.k_proj.out_features == 8  # 1 of 2 kv heads left
    else:
        assert reloaded.transformer.h[0].attn.split_size == 24  # 3 of 4 heads of 8 dims left


def test_convnext_layer_scale_is_sliced_with_its_channels() -> None:
    model, inputs = _build("hf_convnext")
    layer = model.convnext.encoder.stages[0].layers[0]
    scale_before = layer.layer_scale_parameter.detach().clone()
    dw_before = layer.dwconv.weight.detach().clone()
    graph = DependencyGraph.build(model, inputs)
    group = next(g for g in graph.groups() if g.id == "convnext.embeddings.patch_embeddings")
    assert not group.exact  # the channels feed LayerNorm statistics
    graph.prune({group.id: [0, 5]})
    keep = [i for i in range(16) if i not in (0, 5)]
    torch.testing.assert_close(layer.layer_scale_parameter.detach(), scale_before[keep])
    torch.testing.assert_close(layer.dwconv.weight.detach(), dw_before[keep])
    assert layer.layernorm.weight.shape == (14,)
    assert torch.isfinite(_logits(model, inputs)).all()


def test_cross_attention_keys_read_encoder_states_and_heads_prune_exactly() -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        is_decoder=True,
        add_cross_attention=True,
        attn_implementation="eager",
    )
    model = transformers.BertModel(config).eval()
    inputs = {"input_ids": torch.randint(1, 64, (2, 6)), "encoder_hidden_states": torch.randn(2, 5, 32)}
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    cross = graph.group("encoder.layer.0.crossattention.self.query#heads")
    assert (cross.unit, cross.size, cross.exact) == ("head", 4, True)
    graph.prune({cross.id: [1]})
    assert verify_pruning(original, model, inputs, {cross.id: [1]}) <= 1e-5
    key = model.encoder.layer[0].crossattention.self.key
    assert tuple(key.weight.shape) == (24, 32)  # one head fewer; still reads the 32 encoder channels


@pytest.mark.parametrize(
    ("name", "group_id", "params"),
    [
        (
            "hf_vit",
            "vit.embeddings.patch_embeddings.projection",
            {
                "vit.embeddings.cls_token": 2,
                "vit.embeddings.position_embeddings": 2,
                "vit.layernorm.weight": 0,
            },
        ),
        (
            "hf_bert",
            "bert.embeddings.word_embeddings",
            {
                "bert.embeddings.word_embeddings.weight": 1,
                "bert.embeddings.position_embeddings.weight": 1,
                "bert.embeddings.token_type_embeddings.weight": 1,
                "bert.embeddings.LayerNorm.weight": 0,
            },
        ),
        ("hf_llama", "model.embed_tokens", {"model.norm.weight": 0, "lm_head.weight": 1}),
    ],
)
def test_hidden_width_pruning_slices_embeddings_and_norms(
    name: str, group_id: str, params: dict[str, int]
) -> None:
    model, inputs = _build(name)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    graph = DependencyGraph.build(model, inputs)
    group = graph.group(group_id)
    assert group.size == 32 and not group.exact  # through LayerNorm/RMSNorm statistics
    graph.prune({group.id: [3, 7]})
    keep = torch.tensor([i for i in range(32) if i not in (3, 7)])
    after = dict(model.named_parameters())
    for pname, dim in params.items():
        torch.testing.assert_close(after[pname].detach(), before[pname].index_select(dim, keep))
    assert torch.isfinite(_logits(model, inputs)).all()


def test_swin_heads_prune_with_their_relative_position_bias_columns() -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 4],
        window_size=4,
        attn_implementation="eager",
    )
    model = transformers.SwinForImageClassification(config).eval()
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32)}
    attn = model.swin.encoder.layers[1].blocks[0].attention
    with torch.no_grad():  # distinct per-head biases, so slicing the wrong columns would show
        attn.relative_position_bias.relative_position_bias_table.normal_()
    table = attn.relative_position_bias.relative_position_bias_table.detach().clone()
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    group = graph.group("swin.encoder.layers.1.blocks.0.attention.q_proj#heads")
    graph.prune({group.id: [1, 2]})
    assert verify_pruning(original, model, inputs, {group.id: [1, 2]}) <= 1e-5
    after = attn.relative_position_bias.relative_position_bias_table.detach()
    torch.testing.assert_close(after, table[:, [0, 3]])


def test_heads_receiving_a_per_head_bias_from_outside_are_blocked() -> None:
    class BiasedAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head_dim = 4
            self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)
            self.v_proj, self.o_proj = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, hidden_states: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
            b, s, _ = hidden_states.shape
            q = self.q_proj(hidden_states).view(b, s, -1, 4).transpose(1, 2)
            k = self.k_proj(hidden_states).view(b, s, -1, 4).transpose(1, 2)
            v = self.v_proj(hidden_states).view(b, s, -1, 4).transpose(1, 2)
            weights = (q @ k.transpose(-1, -2) + position_bias).softmax(-1)
            return self.o_proj((weights @ v).transpose(1, 2).reshape(b, s, -1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.randn(1, 2, 3, 3))  # shared by both layers, one slice per head
            self.layers = nn.ModuleList([BiasedAttention(), BiasedAttention()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = x + layer(x, self.bias * 1.0)
            return x

    from torchpare.prune.rules import register_rule

    register_rule(BiasedAttention, ProjAttentionRule(), override=True)
    graph = DependencyGraph.build(Net(), torch.randn(2, 3, 8))
    assert not any(g.unit == "head" for g in graph.groups())
    assert "per-head input of shape (1, 2, 3, 3)" in graph.report()


def test_olmo_hidden_width_shrinks_the_normalized_shape_of_its_parameterless_norms() -> None:
    # OLMo's LayerNorm has no parameters: its forward reads ``self.normalized_shape``, which used to
    # stay at the old width and crash the first forward after pruning the hidden size.
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.OlmoConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=100, pad_token_id=0, bos_token_id=None, eos_token_id=1,
    )
    model = transformers.OlmoForCausalLM(config).eval()
    inputs = {"input_ids": torch.randint(0, 100, (1, 6))}
    graph = DependencyGraph.build(model, inputs)
    graph.prune({"model.embed_tokens": [0, 3, 5]})
    norms = [m for m in model.modules() if type(m).__name__ == "OlmoLayerNorm"]
    assert len(norms) == 5 and all(tuple(m.normalized_shape) == (29,) for m in norms)
    assert torch.isfinite(_logits(model, inputs)).all()
    model.train()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert graph.group("model.embed_tokens").size == 29
