"""count() against an independent hand count on every zoo model (issue 18: counting that can be trusted).

The hand count does not use ``FlopCounterMode``: forward hooks read each convolution's and linear
layer's real input and output shapes (a shared layer counts once per call) and apply the textbook
formulas; attention adds ``2 * 2 * batch * heads * queries * keys * head_dim`` per layer (scores and
weighted values) from the model's own sizes. Bias additions, norms and activations are not FLOPs here,
as in ``count()``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchpare.prune import count
from torchpare.zoo import ZOO


def _conv_flops(m: nn.Conv2d, out: torch.Tensor) -> int:
    # each output element: (in_channels / groups) * kh * kw multiply-adds
    return 2 * out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _layer_flops(model: nn.Module, inputs) -> int:
    total = 0

    def hook(module, args, out):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv_flops(module, out)
        elif isinstance(module, nn.Linear):
            total += 2 * (out.numel() // module.out_features) * module.in_features * module.out_features
        elif type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer: weight (in, out)
            n_in, n_out = module.weight.shape
            total += 2 * (out.numel() // n_out) * n_in * n_out

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(**inputs) if isinstance(inputs, dict) else model(inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def _mha_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Scores and weighted values of every nn.MultiheadAttention call (its projections are F.linear
    calls inside, not nn.Linear modules: counted here from the module's sizes)."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        q = args[0]
        tokens = q.shape[1] if module.batch_first else q.shape[0]
        batch = q.shape[0] if module.batch_first else q.shape[1]
        e = module.embed_dim
        total += 2 * batch * tokens * tokens * e * 2  # scores and weighted values, all heads
        total += 2 * batch * tokens * e * 3 * e  # in_proj (q, k, v)
        total += 2 * batch * tokens * e * e  # out_proj: an nn.Linear that MHA calls functionally (no hook)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _hf_attention_flops(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    cfg = model.config
    if "pixel_values" in inputs:
        if not hasattr(cfg, "num_attention_heads"):
            return 0  # convolutional models: no attention
        batch, _, h, w = inputs["pixel_values"].shape
        tokens = (h // cfg.patch_size) * (w // cfg.patch_size) + 1  # + [CLS]
    else:
        batch, tokens = inputs["input_ids"].shape
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers * 2 * 2 * batch * heads * tokens * tokens * head_dim


PLAIN = [n for n in ZOO if not n.startswith("hf_") and n not in ("vit", "swin", "swinv2")]  # windowed: below


@pytest.mark.parametrize("name", PLAIN)
def test_plain_zoo_model_flops_match_hand_count(name):
    model, x = ZOO[name]()
    model.eval()
    assert count(model, x)["flops"] == _layer_flops(model, x) > 0


def test_vit_flops_match_hand_count_from_hooks():
    model, x = ZOO["vit"]()
    model.eval()
    assert count(model, x)["flops"] == _layer_flops(model, x) + _mha_flops(model, x)


@pytest.mark.parametrize("name", [n for n in ZOO if n.startswith("hf_")])
def test_hugging_face_zoo_model_flops_match_hand_count(name):
    pytest.importorskip("transformers")
    model, inputs = ZOO[name]()
    model.eval()
    expected = _layer_flops(model, inputs) + _hf_attention_flops(model, inputs)
    allowed = {expected}
    if hasattr(model.config, "rope_theta") or "rotary" in str(model).lower():
        # transformers 5.9 builds the rotary angles as a matmul, inv_freq (1, head_dim/2, 1) @ positions
        # (1, 1, seq); 5.24 does not: both are what runs, so both counts are right for their release
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        allowed.add(expected + 2 * (head_dim // 2) * inputs["input_ids"].shape[1])
    assert count(model, inputs)["flops"] in allowed


def test_swinv2_flops_match_hand_count_from_hooks():
    """Swin-V2's qkv runs through F.linear (its bias is rebuilt per call): counted from each attention's
    window batch, with the cosine scores and weighted values; cpb MLP, proj and MLPs by the layer hooks."""
    model, x = ZOO["swinv2"]()
    model.eval()
    attention = 0

    def hook(module, args, out):
        nonlocal attention
        windows, tokens, dim = args[0].shape
        inner = module.num_heads * module.head_dim
        attention += 2 * windows * tokens * dim * 3 * inner  # q, k, v
        attention += 2 * 2 * windows * module.num_heads * tokens * tokens * module.head_dim

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "WindowAttentionV2"]
    try:
        layers = _layer_flops(model, x)
    finally:
        for h in handles:
            h.remove()
    assert handles and count(model, x)["flops"] == layers + attention
