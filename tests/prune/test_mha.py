"""nn.MultiheadAttention: heads, input and output widths prune exactly, in every layout and both modes."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from torchpare.prune import DependencyGraph, verify_pruning
from torchpare.prune.rules.mha import PrunedMultiheadAttention


class CrossNet(nn.Module):
    """Projections feed query/key/value; a residual ties the query and output widths."""

    def __init__(self, batch_first=True, need_weights=False, kwargs=None, **mha_kwargs):
        super().__init__()
        kw = mha_kwargs
        self.q = nn.Linear(6, 12)
        self.k = nn.Linear(6, kw.get("kdim") or 12)
        self.v = nn.Linear(6, kw.get("vdim") or 12)
        self.batch_first, self.need_weights = batch_first, need_weights
        self.kwargs = kwargs or {}
        self.mha = nn.MultiheadAttention(12, 3, batch_first=batch_first, **kw)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        q = self.q(x)
        y, _ = self.mha(q, self.k(x), self.v(x), need_weights=self.need_weights, **self.kwargs)
        return self.head(y + q)


class SelfAttnNet(nn.Module):
    """Self-attention on one tensor (the stock fast path's case)."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.mha = nn.MultiheadAttention(12, 3, batch_first=batch_first)
        self.head = nn.Linear(12, 4)
        self.batch_first = batch_first

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        h = self.inp(x)
        y, _ = self.mha(h, h, h, need_weights=False)
        return self.head(y + h)


class _OpNames(TorchDispatchMode):
    """The aten ops a forward runs."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def _random_plan(graph, seed):
    rng = random.Random(seed)
    return {
        g.id: rng.sample(range(g.size), rng.randint(1, g.size - 1))
        for g in graph.groups()
        if g.size > 1 and g.exact
    }


def _prune_and_check(model, x, seed=0):
    torch.manual_seed(seed)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    plan = _random_plan(graph, seed)
    assert any(g.unit == "head" for g in graph.groups()), graph.report()
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    return original, graph, plan


LAYOUTS = {
    "packed": {},
    "no_bias": {"bias": False},
    "add_bias_kv": {"add_bias_kv": True},
    "kdim_vdim": {"kdim": 5, "vdim": 7},
    "kdim_vdim_no_bias": {"kdim": 5, "vdim": 7, "bias": False},
    "add_zero_attn": {"add_zero_attn": True},
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_pruned_mha_matches_masked_original_in_every_layout(layout, batch_first):
    torch.manual_seed(0)
    model = CrossNet(batch_first, **LAYOUTS[layout]).eval()
    x = torch.randn(2, 5, 6)
    _prune_and_check(model, x)
    assert model.mha.num_heads < 3
    assert (
        model.mha.embed_dim == model.mha.in_proj_weight.shape[1]
        if model.mha.in_proj_weight is not None
        else True
    )
    # the pruned module runs in train mode and under no_grad in eval (the stock fast path's conditions)
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        model(x)


@pytest.mark.parametrize("need_weights", [True, False])
def test_need_weights_discarded_keeps_heads_exact(need_weights):
    torch.manual_seed(1)
    model = CrossNet(need_weights=need_weights).eval()
    x = torch.randn(2, 5, 6)
    graph = DependencyGraph.build(model, x)
    heads = [g for g in graph.groups() if g.unit == "head"]
    assert heads and all(g.exact for g in heads)
    _prune_and_check(model, x)


class ReadsWeights(nn.Module):
    def __init__(self, average):
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.mha = nn.MultiheadAttention(12, 3, batch_first=True)
        self.average = average

    def forward(self, x):
        h = self.inp(x)
        y, w = self.mha(h, h, h, average_attn_weights=self.average)
        return y.sum(-1) + w.sum(dim=(1, -1) if not self.average else -1)


def test_averaged_weights_read_by_the_model_make_heads_inexact():
    model = ReadsWeights(average=True).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 5, 6))
    heads = next(g for g in graph.groups() if g.unit == "head")
    assert not heads.exact and "averaged attention weights" in heads.inexact_reason


def test_per_head_weights_read_by_the_model_block_heads():
    model = ReadsWeights(average=False).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 5, 6))
    assert not any(g.unit == "head" for g in graph.groups())
    assert "per-head attention weights" in graph.report()


def test_3d_attn_mask_blocks_heads_with_reason():
    mask = torch.zeros(2 * 3, 5, 5)
    model = CrossNet(kwargs={"attn_mask": mask}).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 5, 6))
    assert not any(g.unit == "head" for g in graph.groups())
    assert "3-D attn_mask" in graph.report()


@pytest.mark.parametrize("need_weights", [True, False])
def test_masks_and_causal_survive_pruning(need_weights):
    torch.manual_seed(2)
    kpm = torch.tensor([[False] * 4 + [True], [False] * 5])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    model = CrossNet(
        need_weights=need_weights, kwargs={"key_padding_mask": kpm, "attn_mask": causal, "is_causal": True}
    ).eval()
    _prune_and_check(model, torch.randn(2, 5, 6), seed=3)
    bool_mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
    model = CrossNet(need_weights=need_weights, kwargs={"attn_mask": bool_mask}).eval()
    _prune_and_check(model, torch.randn(2, 5, 6), seed=4)


def test_unbatched_inputs():
    torch.manual_seed(3)

    class Unbatched(SelfAttnNet):
        def forward(self, x):
            return super().forward(x.squeeze(0))

    model = Unbatched().eval()
    _prune_and_check(model, torch.randn(1, 5, 6))


@pytest.mark.parametrize("batch_first", [True, False])
def test_widths_stock_mha_can_express_keep_the_class_and_its_fast_path(batch_first):
    """Pruning one head and as many residual channels keeps ``num_heads * head_dim == embed_dim``."""
    torch.manual_seed(4)
    model = SelfAttnNet(batch_first).eval()
    x = torch.randn(2, 5, 6)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    heads = next(g for g in graph.groups() if g.unit == "head")
    hidden = next(g for g in graph.groups() if g.unit == "channel" and g.size == 12)
    plan = {heads.id: [1], hidden.id: [0, 3, 5, 11]}
    graph.prune(plan)
    assert type(model.mha) is nn.MultiheadAttention
    assert (model.mha.embed_dim, model.mha.num_heads, model.mha.kdim, model.mha.vdim) == (8, 2, 8, 8)
    assert model.mha._qkv_same_embed_dim
    assert verify_pruning(original, model, x, plan) <= 1e-5
    # eval + no_grad: the fast path (torch._native_multi_head_attention) on the pruned module
    masked = copy.deepcopy(model)
    ops = _OpNames()
    with torch.no_grad(), ops:
        fast = model(x)
    if batch_first:  # the stock fast path needs batch_first
        assert "aten._native_multi_head_attention.default" in ops.names
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            slow = masked(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    model.train()
    model(x).sum().backward()


def test_pruned_class_turns_off_fused_fast_paths_and_reprunes():
    torch.manual_seed(5)
    model = SelfAttnNet().eval()
    x = torch.randn(2, 5, 6)
    graph = DependencyGraph.build(model, x)
    heads = next(g for g in graph.groups() if g.unit == "head")
    graph.prune({heads.id: [0]})
    assert isinstance(model.mha, PrunedMultiheadAttention) and isinstance(model.mha, nn.MultiheadAttention)
    assert not model.mha._qkv_same_embed_dim and model.mha.num_heads == 2
    # a pruned model prunes again, and its state dict has the original keys
    keys = set(model.state_dict())
    assert keys == set(SelfAttnNet().state_dict())
    _prune_and_check(model, x, seed=6)


def test_transformer_encoder_layer_prunes_and_runs_after():
    torch.manual_seed(6)
    layer = nn.TransformerEncoderLayer(12, 3, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Linear(6, 12), layer, nn.Linear(12, 4)).eval()
    x = torch.randn(2, 5, 6)
    original = copy.deepcopy(model)
    graph = DependencyGraph.build(model, x)
    heads = [g for g in graph.groups() if g.unit == "head"]
    assert heads, graph.report()
    plan = {heads[0].id: [2]}
    graph.prune(plan)
    assert verify_pruning(original, model, x, plan) <= 1e-5
    with torch.no_grad():  # the encoder layer's fused fast path must not run on the pruned attention
        model(x)


class FunctionalMHA(nn.Module):
    """Attention through `F.multi_head_attention_forward` with a raw packed in-projection weight."""

    def __init__(self, embed_dim=12, num_heads=3):
        super().__init__()
        self.inp = nn.Linear(6, embed_dim)
        self.w = nn.Parameter(torch.randn(3 * embed_dim, embed_dim))
        self.o = nn.Linear(embed_dim, embed_dim)
        self.embed_dim, self.num_heads = embed_dim, num_heads

    def forward(self, x):
        h = self.inp(x).transpose(0, 1)
        y, _ = F.multi_head_attention_forward(
            h, h, h, self.embed_dim, self.num_heads, self.w, None, None, None, False, 0.0,
            self.o.weight, self.o.bias, need_weights=False,
        )
        return y


def test_functional_mha_is_blocked_with_reason():
    graph = DependencyGraph.build(FunctionalMHA(), torch.randn(2, 5, 6))
    assert "F.multi_head_attention_forward takes embed_dim" in graph.report()


def test_blocked_parameters_are_marked_as_ranges_not_element_by_element():
    graph = DependencyGraph.build(FunctionalMHA(embed_dim=96, num_heads=4), torch.randn(2, 5, 6))
    ctx = graph.ctx
    assert any(n == 3 * 96 * 96 for _, n, _ in ctx.blocked_ranges)
    assert len(ctx.sentinels) < 1000  # one entry per range, not one per weight entry
    w_start = next(s for s, n, _ in ctx.blocked_ranges if n == 3 * 96 * 96)
    assert ctx.is_blocked(w_start + 5) and not graph.groups()
    assert "multi_head_attention_forward" in graph.group("w").blocked_by


def test_vit_target_pruning_saves_and_reloads(tmp_path):
    from torchpare.prune import count, load_pruned, prune, save_pruned
    from torchpare.zoo.vit import ViT

    torch.manual_seed(7)
    model = ViT().eval()
    x = torch.randn(2, 3, 16, 16)
    before = count(model, x)["flops"]
    prune(model, x, target_flops_ratio=0.6)
    assert count(model, x)["flops"] <= 0.65 * before
    assert any(isinstance(m, PrunedMultiheadAttention) for m in model.modules())
    save_pruned(model, tmp_path / "vit")
    reloaded = load_pruned(tmp_path / "vit", ViT())
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x), model(x))


def test_subnet_masking_skips_groups_read_inside_multihead_attention():
    """Hooks cannot mask what nn.MultiheadAttention reads (key/value columns, out_proj): those groups
    are no subnet spaces, and a subnet of the others deploys equal to the masked supernet."""
    from torchpare.prune.pruners import RandomPruner, deploy_subnet

    torch.manual_seed(8)
    model = nn.Sequential(SelfAttnNet(), nn.ReLU(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 5, 6)
    state = copy.deepcopy(model.state_dict())
    pruner = RandomPruner(model, x)
    heads = next(g.id for g in pruner.graph.groups() if g.unit == "head")
    assert heads in pruner.skipped and "cannot be masked" in pruner.skipped[heads]
    assert pruner.groups  # the last Linear's input still is a space
    pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(0)))
    masked = model(x)
    fresh = nn.Sequential(SelfAttnNet(), nn.ReLU(), nn.Linear(4, 3)).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(deploy_subnet(fresh, pruner.export_subnet())(x), masked, atol=1e-5, rtol=1e-5)


def test_head_pruned_vit_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from torchpare.prune import export_onnx
    from torchpare.zoo import ZOO

    torch.manual_seed(9)
    model, x = ZOO["vit"]()
    graph = DependencyGraph.build(model, x)
    graph.prune({g.id: [0] for g in graph.groups() if g.unit == "head"})
    assert isinstance(model.layers[0].self_attention, PrunedMultiheadAttention)
    export_onnx(model, x, tmp_path / "vit.onnx")
    session = ort.InferenceSession(str(tmp_path / "vit.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert float((torch.from_numpy(out) - model(x)).abs().max()) <= 1e-4
