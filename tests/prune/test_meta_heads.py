"""A LLaMA-style model built on the meta device (no weights) plans head pruning like the real one."""

from __future__ import annotations

import warnings

import pytest
import torch

from torchpare.prune import DependencyGraph, prune
from torchpare.prune.counting import meta_inputs
from torchpare.prune.rules import hf_head_probe

transformers = pytest.importorskip("transformers")


def _llama(device: str, **overrides: int) -> torch.nn.Module:
    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4)
    config = transformers.LlamaConfig(
        vocab_size=64, max_position_embeddings=64, **{"intermediate_size": 96, **sizes, **overrides}
    )
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.LlamaForCausalLM(config).eval()


def _heads(graph: DependencyGraph) -> dict[str, tuple[int, str | None]]:
    return {g.id: (g.size, g.blocked_by) for g in graph.all_groups() if g.unit in ("head", "kv_head")}


def test_meta_model_gets_the_head_groups_of_the_real_model(monkeypatch):
    """The head probe needs values; on meta it runs on a random float32 stand-in (it used to fail
    with "Tensor.item() cannot be called on meta tensors", so a meta model could not be planned)."""
    tokens = {"input_ids": torch.randint(0, 64, (1, 8))}
    monkeypatch.setattr(hf_head_probe, "_PROBED", {})  # the probe must run on the meta model itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = _heads(DependencyGraph.build(_llama("meta"), meta_inputs(tokens)))
        monkeypatch.setattr(hf_head_probe, "_PROBED", {})
        real = _heads(DependencyGraph.build(_llama("cpu"), tokens))
    assert meta == real
    assert meta and all(blocked is None for _, blocked in meta.values())


def test_plan_on_meta_then_apply_to_real_weights(monkeypatch):
    tokens = {"input_ids": torch.randint(0, 64, (1, 8))}
    monkeypatch.setattr(hf_head_probe, "_PROBED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, summary = prune(
            _llama("meta"), meta_inputs(tokens), "random", target_flops_ratio=0.6, dry_run=True
        )
        model = _llama("cpu")
        summary.apply(model, tokens)
    assert (
        model.model.layers[0].self_attn.k_proj.out_features < 4 * 8
        or model.model.layers[0].mlp.gate_proj.out_features < 96
    )
    assert model(**tokens).logits.shape == (1, 8, 64)


_WIDE = dict(
    hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=1, intermediate_size=64
)


def test_bfloat16_model_keeps_its_heads_prunable(monkeypatch):
    """The probe compared a bfloat16 forward with a 1e-4 tolerance: rounding read as "does not follow
    head pruning", so no head of a bf16 LLaMA was ever pruned. It now probes a float32 copy."""
    tokens = {"input_ids": torch.randint(0, 64, (1, 64), generator=torch.Generator().manual_seed(0))}
    monkeypatch.setattr(hf_head_probe, "_PROBED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = _heads(DependencyGraph.build(_llama("cpu", **_WIDE).to(torch.bfloat16), tokens))
    assert heads and all(blocked is None for _, blocked in heads.values()), heads
