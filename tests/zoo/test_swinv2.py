"""The Swin-V2-like zoo model: torchvision's V2 attention, registration, and head pruning."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune import DependencyGraph, prune, verify_pruning
from torchpare.registry import MODELS
from torchpare.zoo import ZOO, SwinV2Like, WindowAttentionV2


def _torchvision_v2_attention(attn: WindowAttentionV2, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` (V2 branch, one unshifted window) written out."""
    b, n, c = x.shape
    heads = attn.num_heads
    qkv_bias = attn.qkv.bias.clone()
    length = qkv_bias.numel() // 3
    qkv_bias[length : 2 * length].zero_()
    qkv = F.linear(x, attn.qkv.weight, qkv_bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    scores = scores * torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
    table = attn.cpb_mlp(attn.relative_coords_table).view(-1, heads)
    bias = table[attn.relative_position_index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
    scores = scores + 16 * torch.sigmoid(bias)
    out = F.softmax(scores, dim=-1).matmul(v).transpose(1, 2).reshape(b, n, c)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def test_window_attention_v2_matches_torchvisions_formula_and_has_its_parameters():
    torch.manual_seed(0)
    attn = WindowAttentionV2(dim=16, window=4, num_heads=2)
    with torch.no_grad():
        attn.qkv.bias.normal_()  # a trained model has a k bias too: the forward must ignore it
        attn.logit_scale.copy_(torch.tensor([1.0, 5.0]).view(2, 1, 1))  # 5 > log(100): clamped
    x = torch.randn(3, 16, 16)
    torch.testing.assert_close(attn(x), _torchvision_v2_attention(attn, x), rtol=1e-5, atol=1e-5)
    assert attn.logit_scale.shape == (2, 1, 1)
    assert [type(m) for m in attn.cpb_mlp] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (attn.cpb_mlp[0].in_features, attn.cpb_mlp[0].out_features) == (2, 512)
    assert attn.cpb_mlp[2].out_features == 2 and attn.cpb_mlp[2].bias is None
    coords = attn.relative_coords_table
    assert coords.shape == (1, 7, 7, 2) and coords.abs().max() == pytest.approx(math.log2(9) / 3)
    fresh = WindowAttentionV2(dim=16, window=4, num_heads=2)
    assert fresh.qkv.bias[16:32].abs().sum() == 0


def test_swinv2_is_registered_runs_and_rejects_a_grid_the_window_does_not_cut():
    assert isinstance(MODELS.build({"type": "SwinV2Like", "dim": 8}), SwinV2Like)
    model, x = ZOO["swinv2"]()
    assert x.shape == (2, 3, 32, 32) and model(x).shape == (2, 10)
    assert model.stages[0][1].shift == 2 and model.stages[2][1].shift == 0  # 4x4 grid: one window
    with pytest.raises(ValueError, match="window=3"):
        SwinV2Like(image_size=32, window=3)


def test_heads_prune_exactly_with_logit_scale_cpb_rows_and_qkv_bias_pieces():
    torch.manual_seed(0)
    model, x = ZOO["swinv2"]()
    with torch.no_grad():
        for attn in (m for m in model.modules() if isinstance(m, WindowAttentionV2)):
            attn.qkv.bias.normal_()
            attn.logit_scale.normal_()
    graph = DependencyGraph.build(model, x)
    heads = {g.id: g for g in graph.groups() if g.unit == "head"}
    assert sorted(heads) == [f"stages.{s}.{b}.attn.qkv#heads" for s in (0, 2) for b in (0, 1)]
    assert all(g.exact and g.blocked_by is None for g in heads.values())
    assert graph.group("stages.2.1.attn.cpb_mlp.0").exact  # the position bias MLP's hidden width
    plan = {"stages.0.0.attn.qkv#heads": [1], "stages.2.1.attn.qkv#heads": [0, 3]}  # indices removed
    plan["stages.2.1.attn.cpb_mlp.0"] = list(range(0, 512, 3))
    original = copy.deepcopy(model)
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    attn = model.stages[2][1].attn
    assert attn.num_heads == 2 and attn.logit_scale.shape == (2, 1, 1)
    assert (attn.qkv.out_features, attn.proj.in_features, attn.cpb_mlp[2].weight.shape) == (48, 16, (2, 341))
    torch.testing.assert_close(attn.logit_scale, original.stages[2][1].attn.logit_scale[[1, 2]])
    kept_rows = [r for t in range(3) for r in range(t * 32, t * 32 + 32) if (r % 32) // 8 in (1, 2)]
    torch.testing.assert_close(attn.qkv.bias, original.stages[2][1].attn.qkv.bias[kept_rows])


def test_a_logit_scale_shared_by_all_heads_blocks_them_with_that_reason():
    model, x = ZOO["swinv2"]()
    model.stages[0][0].attn.logit_scale = nn.Parameter(torch.zeros(1, 1, 1))
    with pytest.warns(UserWarning, match=r"stages.0.0.attn.*logit_scale is \(1, 1, 1\)"):
        graph = DependencyGraph.build(model, x)
    ids = {g.id for g in graph.groups() if g.unit == "head"}
    assert "stages.0.0.attn.qkv#heads" not in ids and "stages.0.1.attn.qkv#heads" in ids
    assert "logit_scale is (1, 1, 1), not a parameter with 2 rows (one per head)" in graph.report()
    plan = {g.id: list(range(0, g.size, 2)) for g in graph.groups() if g.exact}
    original = copy.deepcopy(model)
    graph.prune(plan)
    with pytest.warns(UserWarning, match="logit_scale"):  # verify_pruning builds the masked original's graph
        assert model.stages[0][0].attn.num_heads == 2 and verify_pruning(original, model, x, plan) <= 1e-5


class _TracedThroughV2(WindowAttentionV2):
    """Same forward, own ``forward``: traced op by op instead of by the module rule."""

    def forward(self, windows, mask=None):
        return super().forward(windows, mask)


def test_traced_through_v2_attention_blames_the_cloned_qkv_bias_not_a_missing_parameter():
    torch.manual_seed(0)
    attn = _TracedThroughV2(dim=8, window=2, num_heads=2, cpb_hidden=4)
    with pytest.warns(UserWarning, match="no head unit"):
        graph = DependencyGraph.build(attn, torch.randn(3, 4, 8))
    report = graph.report()
    assert "bias is computed from a parameter inside the forward, not a parameter itself" in report
    assert "is not a parameter" not in report.replace("not a parameter itself", "")


def test_prune_to_half_the_flops_returns_a_running_model_with_fewer_heads():
    torch.manual_seed(0)
    model, x = ZOO["swinv2"]()
    pruned, summary = prune(model, x, target_flops_ratio=0.5)
    assert pruned(x).shape == (2, 10) and torch.isfinite(pruned(x)).all()
    assert summary.flops_after <= 0.5 * summary.flops_before * 1.02
    heads = [m.num_heads for m in pruned.modules() if isinstance(m, WindowAttentionV2)]
    assert sum(heads) < 2 + 2 + 4 + 4
