"""Head pruning of Hugging Face LLaMA (grouped-query attention) and BERT through prune()."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from torchpare.prune import load_pruned, prune, save_pruned  # noqa: E402
from torchpare.zoo.hf import hf_bert, hf_llama  # noqa: E402


def _attn_layers(model, kind):
    return [m for n, m in model.named_modules() if n.endswith(kind)]


def _weaken_kv_head(attn, kv_head: int) -> None:
    """Scale down one kv head (its k/v rows, its query heads' rows, their o_proj columns)."""
    hd = attn.head_dim
    groups = attn.num_key_value_groups
    kv = slice(kv_head * hd, (kv_head + 1) * hd)
    q = slice(kv_head * groups * hd, (kv_head + 1) * groups * hd)
    with torch.no_grad():
        attn.k_proj.weight[kv] *= 1e-3
        attn.v_proj.weight[kv] *= 1e-3
        attn.q_proj.weight[q] *= 1e-3
        attn.o_proj.weight[:, q] *= 1e-3


def _prune_heads(model, inputs, ratio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # head granularity may miss the 2% band
        return prune(
            model,
            inputs,
            importance="l1",
            target_params_ratio=ratio,
            global_pruning=False,
            units=("head", "kv_head"),
        )


def test_llama_gqa_prunes_the_least_important_kv_head_and_still_generates(tmp_path):
    torch.manual_seed(0)
    model, inputs = hf_llama()
    attn0 = _attn_layers(model, "self_attn")[0]
    _weaken_kv_head(attn0, 0)
    kept_k = attn0.k_proj.weight[8:16].clone()
    model, summary = _prune_heads(model, inputs, 0.86)
    for attn in _attn_layers(model, "self_attn"):
        assert attn.k_proj.out_features == 8 and attn.q_proj.out_features == 16
    torch.testing.assert_close(attn0.k_proj.weight, kept_k)  # the weakened kv head 0 went
    assert model.config.num_attention_heads == 2 and model.config.num_key_value_heads == 1
    assert model.config.head_dim == 8
    assert model(**inputs).logits.shape == (2, 8, 64)
    out = model.generate(inputs["input_ids"][:1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert summary.params_after < summary.params_before

    # The updated config expresses the pruned model: save_pretrained/from_pretrained round trip.
    model.save_pretrained(tmp_path / "hf")
    from transformers import LlamaForCausalLM

    again = LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)


def test_bert_prunes_heads_by_importance_and_reloads_with_load_pruned(tmp_path):
    torch.manual_seed(0)
    model, inputs = hf_bert()
    self0 = _attn_layers(model, "attention.self")[0]
    hd = self0.attention_head_size
    with torch.no_grad():
        for lin in (self0.query, self0.key, self0.value):
            lin.weight[2 * hd : 3 * hd] *= 1e-3
    kept_q = torch.cat([self0.query.weight[: 2 * hd], self0.query.weight[3 * hd :]]).clone()
    model, summary = _prune_heads(model, inputs, 0.9)
    assert self0.num_attention_heads == 3 and self0.all_head_size == 3 * hd
    # BERT derives the head size from hidden_size / num_attention_heads: its config cannot describe
    # pruned heads, so it is left as is (documented) and the model reloads through load_pruned.
    assert model.config.num_attention_heads == 4
    torch.testing.assert_close(self0.query.weight, kept_q)  # head 2 (weakened) was removed
    logits = model(**inputs).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    save_pruned(model, tmp_path)
    fresh, _ = hf_bert()
    torch.testing.assert_close(
        load_pruned(tmp_path, fresh.eval())(**inputs).logits, logits, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("importance", ["taylor", "fisher"])
def test_data_dependent_criteria_prune_llama_heads_from_labelled_dict_batches(importance):
    torch.manual_seed(0)
    model, inputs = hf_llama()
    batches = [{**inputs, "labels": inputs["input_ids"]}]
    model, summary = prune(
        model,
        inputs,
        importance=importance,
        target_params_ratio=0.86,
        global_pruning=False,
        units=("kv_head",),
        data=batches,
    )
    assert [b for b, a in summary.groups.values()] != [a for b, a in summary.groups.values()]
    assert torch.isfinite(model(**inputs).logits).all()


def test_llama_per_layer_flops_pruning_updates_config_and_round_trips_save_pretrained(tmp_path):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model, inputs = hf_llama()
    model, summary = prune(model, inputs, target_flops_ratio=0.5, global_pruning=False)
    assert summary.within_tolerance
    config = model.config
    assert config.hidden_size == model.model.embed_tokens.embedding_dim < 32
    assert config.intermediate_size == model.model.layers[0].mlp.up_proj.out_features < 64
    assert config.head_dim == 8  # explicit, no longer hidden_size // num_attention_heads
    model.save_pretrained(tmp_path)
    again = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)
    assert model.generate(inputs["input_ids"][:1], max_new_tokens=3, do_sample=False).shape[1] == 11


_TEXT_KW = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
# name -> (model class, config class, config kwargs, input kind); small random-init models.
_MORE = {
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", {**_TEXT_KW, "num_key_value_heads": 2}, "text"),
    "mistral": ("MistralForCausalLM", "MistralConfig", {**_TEXT_KW, "num_key_value_heads": 2}, "text"),
    "gemma": (
        "GemmaForCausalLM",
        "GemmaConfig",
        {**_TEXT_KW, "num_key_value_heads": 1, "head_dim": 8},
        "text",
    ),
    "phi": ("PhiForCausalLM", "PhiConfig", _TEXT_KW, "text"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", _TEXT_KW, "text"),
    "roberta": ("RobertaForSequenceClassification", "RobertaConfig", {**_TEXT_KW, "pad_token_id": 1}, "text"),
    "distilbert": (
        "DistilBertForSequenceClassification",
        "DistilBertConfig",
        dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
        "text",
    ),
    "bart": (
        "BartForConditionalGeneration",
        "BartConfig",
        dict(
            vocab_size=64,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
        ),
        "text",
    ),
    "deit": (
        "DeiTForImageClassification",
        "DeiTConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            num_labels=10,
        ),
        "image",
    ),
}


@pytest.mark.parametrize("name", sorted(_MORE))
def test_more_transformers_reach_half_flops_run_and_reload(name, tmp_path):
    import transformers

    model_cls, config_cls, kwargs, kind = _MORE[name]
    if not hasattr(transformers, model_cls):
        pytest.skip(f"transformers has no {model_cls}")
    gen = torch.Generator().manual_seed(0)
    if kind == "text":
        inputs = {
            "input_ids": torch.randint(3, 60, (2, 8), generator=gen),
            "attention_mask": torch.ones(2, 8).long(),
        }
    else:
        inputs = {"pixel_values": torch.randn(2, 3, 32, 32, generator=gen)}

    def build():
        torch.manual_seed(0)
        return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()

    model, summary = prune(build(), inputs, target_flops_ratio=0.5)
    assert summary.within_tolerance, summary.table()
    logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    save_pruned(model, tmp_path)
    torch.testing.assert_close(load_pruned(tmp_path, build())(**inputs).logits, logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("keeps_wrapped", [True, False])
def test_decorated_attention_forward_still_prunes_heads_exactly(keeps_wrapped):
    """transformers 5.24 wraps every attention forward in a deprecation decorator (functools.wraps).
    Head detection reads neither the forward's code nor its identity: a wrapper that hides the
    wrapped body entirely (no ``__wrapped__``) gets head units too, and they prune exactly."""
    import copy
    import functools

    from transformers.models.llama.modeling_llama import LlamaAttention

    from torchpare.prune.graph import DependencyGraph
    from torchpare.prune.verify import verify_pruning

    def deprecate(func):
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)

        return functools.wraps(func)(wrapper) if keeps_wrapped else wrapper

    name = f"WrappedLlamaAttention{int(keeps_wrapped)}"
    wrapped = type(name, (LlamaAttention,), {"forward": deprecate(LlamaAttention.forward)})
    wrapped.__module__ = "transformers.models.wrapped.modeling_wrapped"
    torch.manual_seed(0)
    model, inputs = hf_llama()
    for layer in model.model.layers:
        layer.self_attn.__class__ = wrapped
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups() if g.unit == "kv_head"]
    assert len(heads) == 2, graph.report()
    plan = {heads[0].id: [1]}
    graph.prune(plan)
    assert model.model.layers[0].self_attn.k_proj.out_features == 8
    assert verify_pruning(original, model, inputs, plan) <= 1e-5
