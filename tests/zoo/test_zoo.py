"""Contract tests for every zoo entry: builds, runs forward, deterministic for a seed, finite logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from torchpare.registry import MODELS
from torchpare.zoo import HF_MODELS, ZOO, DigitsCNN, DigitsMLP, DigitsSmallCNN, build_zoo_model


def _forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_entry_builds_runs_and_is_deterministic_for_a_seed(name: str) -> None:
    torch.manual_seed(123)
    model, inputs = ZOO[name]()
    torch.manual_seed(123)
    again, inputs_again = ZOO[name]()
    assert not model.training, f"{name}: zoo models are returned in eval mode"
    with torch.no_grad():
        out = _forward(model, inputs)
        out_again = _forward(again, inputs_again)
    assert torch.isfinite(out).all()
    assert out.shape[0] == 2
    torch.testing.assert_close(out, out_again, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_weights_depend_on_the_seed(name: str) -> None:
    torch.manual_seed(1)
    a, _ = ZOO[name]()
    torch.manual_seed(2)
    b, _ = ZOO[name]()
    differs = any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert differs


@pytest.mark.parametrize("name", ["hf_vit", "hf_bert", "hf_gpt2", "hf_llama"])
def test_hf_transformers_use_eager_attention_and_sdpa_gives_the_same_logits(name: str) -> None:
    builder = MODELS.get(name)
    torch.manual_seed(0)
    eager, inputs = builder()
    torch.manual_seed(0)
    sdpa, _ = builder(attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        a, b = _forward(eager, inputs), _forward(sdpa, inputs)
    if a.dim() == 3:  # causal LMs: fully masked (padded) query positions are implementation-defined
        keep = inputs["attention_mask"].bool()
        a, b = a[keep], b[keep]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_hf_llama_uses_grouped_query_attention() -> None:
    model, _ = MODELS.get("hf_llama")()
    attn = model.model.layers[0].self_attn
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    assert attn.q_proj.out_features == 4 * attn.head_dim
    assert attn.k_proj.out_features == 2 * attn.head_dim


def test_every_zoo_model_is_registered_in_models() -> None:
    names = set(MODELS.names())
    for expected in [
        "DigitsCNN",
        "DigitsSmallCNN",
        "DigitsMLP",
        "VGGNet",
        "ResNetBottleneck",
        "DenseNetConcat",
        "MobileNetV2Like",
        "SharedConvNet",
        "GroupedConvNet",
        "MLPNet",
        *HF_MODELS,
    ]:
        assert expected in names
    assert isinstance(MODELS.build({"type": "DigitsCNN", "width": 4}), DigitsCNN)


def test_digits_models_have_the_contract_module_names_and_sizes() -> None:
    cnn_names = {n for n, _ in DigitsCNN().named_modules()}
    assert {"stem", "layer1", "layer2", "layer3", "fc"} <= cnn_names
    assert {n for n, _ in DigitsSmallCNN().named_modules()} == cnn_names
    assert {"fc1", "fc2"} <= {n for n, _ in DigitsMLP().named_modules()}
    assert sum(p.numel() for p in DigitsMLP().parameters()) == 64 * 16 + 16 + 16 * 10 + 10
    teacher = DigitsCNN()
    assert [
        teacher.layer1.conv.out_channels,
        teacher.layer2.conv.out_channels,
        teacher.layer3.conv.out_channels,
    ] == [64, 128, 128]
    assert teacher.layer2.conv.stride == (2, 2)


def test_digits_cnn_feature_shapes_follow_the_stride_two_in_layer2() -> None:
    model = DigitsCNN(width=4).eval()
    x = torch.rand(3, 1, 8, 8)
    f1 = model.layer1(model.stem(x))
    f2 = model.layer2(f1)
    assert f1.shape == (3, 8, 8, 8)
    assert f2.shape == (3, 16, 4, 4)


def test_invalid_width_raises_with_the_argument_name() -> None:
    with pytest.raises(ValueError, match="width"):
        DigitsCNN(width=0)
    with pytest.raises(ValueError, match="hidden"):
        DigitsMLP(hidden=-1)


def test_build_zoo_model_unknown_name_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="did you mean 'resnet'"):
        build_zoo_model("resnt")


def test_resnet_bottleneck_exposes_head_fc_and_downsample_shortcuts() -> None:
    model, _ = ZOO["resnet"]()
    names = {n for n, _ in model.named_modules()}
    assert "head.fc" in names
    assert "layer1.0.downsample" in names and "layer2.0.downsample" in names
    assert model.layer1[1].downsample is None


def test_shared_conv_module_is_called_twice_per_forward() -> None:
    model, x = ZOO["shared_conv"]()
    calls = []
    handle = model.shared.register_forward_hook(lambda *_: calls.append(1))
    try:
        model(x)
    finally:
        handle.remove()
    assert len(calls) == 2
