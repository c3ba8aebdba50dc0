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
        return prune(model, inputs, importance="l1", target_params_ratio=ratio, global_pruning=False,
                     units=("head", "kv_head"))


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
    torch.testing.assert_close(self0.query.weight, kept_q)  # head 2 (weakened) was removed
    logits = model(**inputs).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    save_pruned(model, tmp_path)
    fresh, _ = hf_bert()
    torch.testing.assert_close(load_pruned(tmp_path, fresh.eval())(**inputs).logits, logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("importance", ["taylor", "fisher"])
def test_data_dependent_criteria_prune_llama_heads_from_labelled_dict_batches(importance):
    torch.manual_seed(0)
    model, inputs = hf_llama()
    batches = [{**inputs, "labels": inputs["input_ids"]}]
    model, summary = prune(model, inputs, importance=importance, target_params_ratio=0.86,
                           global_pruning=False, units=("kv_head",), data=batches)
    assert [b for b, a in summary.groups.values()] != [a for b, a in summary.groups.values()]
    assert torch.isfinite(model(**inputs).logits).all()
