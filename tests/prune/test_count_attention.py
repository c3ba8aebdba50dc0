"""count() counts every attention kernel that runs, fast paths included, against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpare.prune import DependencyGraph, count
from torchpare.zoo import ZOO
from torchpare.zoo.swin import SwinLike
from torchpare.zoo.vit import ViT


def _vit_hand_count(model: ViT, batch: int, image: int) -> int:
    patch = model.conv_proj.kernel_size[0]
    n = (image // patch) ** 2
    tokens = n + 1
    hidden = model.conv_proj.out_channels
    flops = 2 * batch * n * hidden * 3 * patch * patch  # patch embedding
    for block in model.layers:
        attn = block.self_attention
        inner = attn.out_proj.in_features
        flops += 2 * batch * tokens * hidden * 3 * inner  # q, k, v projections
        flops += 2 * 2 * batch * tokens * tokens * inner  # scores and weighted values, all heads
        flops += 2 * batch * tokens * inner * attn.out_proj.out_features  # output projection
        fc1, fc2 = block.mlp[0], block.mlp[2]
        flops += (
            2 * batch * tokens * (fc1.in_features * fc1.out_features + fc2.in_features * fc2.out_features)
        )
    return flops + 2 * batch * model.heads.in_features * model.heads.out_features


@pytest.mark.parametrize("train", [False, True])
def test_vit_flops_match_hand_count_with_and_without_the_fast_path(train):
    model = ViT().train(train)
    x = torch.randn(2, 3, 16, 16)
    assert count(model, x)["flops"] == _vit_hand_count(model, 2, 16)


def test_vit_flops_after_head_pruning_match_hand_count():
    torch.manual_seed(0)
    model = ViT().eval()
    x = torch.randn(2, 3, 16, 16)
    graph = DependencyGraph.build(model, x)
    plan = {g.id: [0] for g in graph.groups() if g.unit == "head"}
    graph.prune(plan)
    assert model.layers[0].self_attention.num_heads == 3
    assert count(model, x)["flops"] == _vit_hand_count(model, 2, 16)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer_fast_path_is_counted(batch_first):
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=batch_first).eval()
    x = torch.randn(2, 5, 16)
    batch, tokens = (2, 5) if batch_first else (5, 2)  # (seq, batch, dim) when not batch_first
    rows = batch * tokens
    core = 2 * 2 * batch * tokens * tokens * 16
    expected = 2 * rows * 16 * 48 + core + 2 * rows * 16 * 16 + 2 * rows * 2 * 16 * 32
    assert count(layer, x)["flops"] == expected


def test_swin_flops_match_hand_count():
    model = SwinLike()
    batch, res, dim, win = 2, 8, 24, 4
    tokens, window_tokens = batch * res * res, win * win
    expected = 2 * tokens * dim * 3 * 2 * 2  # patch embedding (2x2 patches, 3 input channels)
    for _ in model.blocks:
        expected += 2 * tokens * dim * 3 * dim + 2 * tokens * dim * dim  # qkv and proj
        expected += 2 * 2 * tokens * window_tokens * dim  # scores and weighted values inside windows
        expected += 2 * 2 * tokens * dim * 2 * dim  # mlp
    expected += 2 * batch * dim * 10
    assert count(model, torch.randn(batch, 3, 16, 16))["flops"] == expected


@pytest.mark.parametrize("name", ["mlp", "digits_mlp"])
def test_mlp_zoo_model_flops_match_hand_count(name):
    model, x = ZOO[name]()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears
    assert count(model, x)["flops"] == sum(2 * x.shape[0] * m.in_features * m.out_features for m in linears)


def test_sdpa_on_cpu_is_counted():
    q = torch.randn(2, 3, 5, 8)
    k = torch.randn(2, 3, 7, 8)
    v = torch.randn(2, 3, 7, 4)

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    assert count(Attn(), (q, k, v))["flops"] == 2 * 6 * 5 * 7 * 8 + 2 * 6 * 5 * 7 * 4
