"""Pruned Hugging Face models save as save_pretrained folders and reload without the original model."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from torchpare.prune import from_pretrained, plain_format_problems, prune, save_pretrained  # noqa: E402
from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.prune.hf_pretrained import WIDTHS_NAME, PretrainedFolderError  # noqa: E402
from torchpare.zoo.hf import hf_bert, hf_gpt2, hf_llama, hf_vit  # noqa: E402

BUILDERS = {"bert": hf_bert, "gpt2": hf_gpt2, "llama": hf_llama, "vit": hf_vit}


def _logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _pruned(name: str, **kwargs: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model, inputs = BUILDERS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, _ = prune(model, inputs, target_params_ratio=0.6, **kwargs)
    return model, inputs


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_globally_pruned_model_reloads_from_its_folder_alone(name: str, tmp_path: Any) -> None:
    model, inputs = _pruned(name)  # global pruning: heads / FFN widths differ per layer, hidden pruned
    save_pretrained(model, tmp_path)
    reloaded = from_pretrained(tmp_path)
    assert type(reloaded) is type(model)
    assert {n: p.shape for n, p in reloaded.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}
    torch.testing.assert_close(_logits(reloaded, inputs), _logits(model, inputs), atol=1e-5, rtol=0)


def test_llama_with_hidden_width_not_a_multiple_of_heads_and_per_layer_kv_heads(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model, inputs = hf_llama()
    graph = DependencyGraph.build(model, inputs)
    kv0 = next(g for g in graph.groups() if g.unit == "kv_head" and g.id.startswith("model.layers.0."))
    hidden = next(g for g in graph.groups() if g.unit == "channel" and g.size == 32)
    ffn1 = next(g for g in graph.groups() if g.unit == "channel" and "layers.1.mlp" in g.id)
    graph.prune({kv0.id: [0], hidden.id: list(range(7)), ffn1.id: list(range(5))})  # hidden 25, FFN 64/59
    assert model.model.embed_tokens.embedding_dim == 25
    assert plain_format_problems(model)  # the plain format cannot say this
    save_pretrained(model, tmp_path)
    reloaded = from_pretrained(tmp_path)
    attn0 = reloaded.model.layers[0].self_attn
    assert (attn0.k_proj.out_features, reloaded.model.layers[1].self_attn.k_proj.out_features) == (8, 16)
    assert reloaded.model.layers[1].mlp.up_proj.out_features == 59
    torch.testing.assert_close(_logits(reloaded, inputs), _logits(model, inputs), atol=1e-5, rtol=0)
    out = reloaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(out, model.generate(**inputs, max_new_tokens=3, do_sample=False))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_uniform_widths_reload_with_plain_auto_model(name: str, tmp_path: Any) -> None:
    torch.manual_seed(0)
    model, inputs = BUILDERS[name]()
    graph = DependencyGraph.build(model, inputs)
    plan = {}
    for g in graph.groups():
        if name == "llama" and g.unit == "kv_head":
            plan[g.id] = [1]  # every layer keeps kv head 0 (and its 2 query heads)
        if g.unit == "channel" and g.size == 64:  # the FFN of every layer: 64 -> 48
            plan[g.id] = list(range(0, 64, 4))
    graph.prune(plan)
    assert plain_format_problems(model) == []
    save_pretrained(model, tmp_path)
    auto = transformers.AutoModelForCausalLM if name == "llama" else transformers.AutoModelForSequenceClassification
    plain = auto.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(_logits(plain, inputs), _logits(model, inputs), atol=1e-5, rtol=0)
    assert json.loads((tmp_path / WIDTHS_NAME).read_text())["plain"] is True
    assert plain.config.intermediate_size == 48


def test_prune_warns_up_front_when_the_config_cannot_state_the_widths() -> None:
    torch.manual_seed(0)
    model, inputs = hf_bert()
    with pytest.warns(UserWarning, match=r"torchpare.prune.save_pretrained.*from_pretrained"):
        prune(model, inputs, target_params_ratio=0.6)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain PyTorch models: nothing to say
        prune(net, torch.randn(2, 16), target_params_ratio=0.5)


def test_reloaded_model_fine_tunes_like_the_saved_one(tmp_path: Any) -> None:
    model, inputs = _pruned("gpt2")
    save_pretrained(model, tmp_path)
    reloaded = from_pretrained(tmp_path)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight  # still tied after pruning
    reloaded.train()
    loss = reloaded(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert reloaded.transformer.wte.weight.grad is not None


def test_weights_that_do_not_fit_the_recorded_shapes_are_named(tmp_path: Any) -> None:
    model, _ = _pruned("llama", round_to=1)  # exact counts: per-layer widths the config cannot state
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / WIDTHS_NAME).read_text())
    name = next(n for n in record["shapes"] if n.endswith("up_proj.weight"))
    record["shapes"][name][0] += 1
    (tmp_path / WIDTHS_NAME).write_text(json.dumps(record))
    with pytest.raises(PretrainedFolderError, match="up_proj"):
        from_pretrained(tmp_path)


def test_save_pretrained_refuses_models_that_are_not_hugging_face(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="save_pruned"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(PretrainedFolderError, match="config.json"):
        from_pretrained(tmp_path)


def test_saving_does_not_change_the_model(tmp_path: Any) -> None:
    model, inputs = _pruned("llama")
    fields = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")
    before = {f: getattr(model.config, f) for f in fields}
    expected = _logits(model, inputs)
    save_pretrained(model, tmp_path)
    assert {f: getattr(model.config, f) for f in fields} == before
    torch.testing.assert_close(_logits(model, inputs), expected, atol=0, rtol=0)
