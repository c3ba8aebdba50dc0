"""Convolutions (1d/2d/3d, transposed, grouped, depthwise) and their functional forms.

Grouping: with ``groups == 1`` weight rows produce and columns read channels. Depthwise-like
(one input channel per group) ties input channel ``j`` with its output rows into one unit; removing it
reduces ``groups``. Other grouped convs prune *slots*: input slot ``k`` (column ``k``) across every group
is one unit, output slot ``l`` (row ``l`` of every group) another, so ``groups`` stays valid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune.labels import LabelContext
from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, FunctionRule, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = ["ConvRule", "FunctionalConvRule", "conv_like"]


def conv_like(
    ctx: LabelContext,
    x: torch.Tensor | None,
    owner: str,
    weight: torch.Tensor,
    bias: bool,
    groups: int,
    out_shape: Any,
    n_spatial: int,
    where: str,
    transposed: bool = False,
) -> torch.Tensor:
    """Union input channels with the weight's slices and return output labels (channels on dim 1,
    or dim 0 for unbatched input)."""
    ch_dim = 1 if len(out_shape) == n_spatial + 2 else 0
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    out = ctx.param(owner, "weight", out_dim, ROLE_OUT)
    if bias:
        ctx.param(owner, "bias", 0, ROLE_OUT, tie=out)
    if x is None:
        return ctx.along(out, out_shape, ch_dim)
    ch = ctx.channels(x, ch_dim, where)
    if transposed and groups != 1:
        reason = f"{where}: grouped transposed convolution"
        ctx.block(x, reason)
        ctx.block(out, reason)
        return ctx.along(out, out_shape, ch_dim)
    if groups == 1:
        ctx.param(owner, "weight", in_dim, ROLE_IN, tie=ch)
        return ctx.along(out, out_shape, ch_dim)
    per_in = weight.shape[1]
    c_out = weight.shape[0]
    per_out = c_out // groups
    # unions on plain lists: a few Python loops are cheaper than the tensor ops that express them
    outs, chs = out.tolist(), ch.tolist()
    if per_in == 1:  # depthwise (with channel multiplier per_out)
        # input j and its per_out rows: one unit
        ctx.uf.union_many([c for c in chs for _ in range(per_out)], outs)
    else:
        # input slot k of every group is column k; output slot l of every group is one unit
        ctx.uf.union_many(chs, ctx.param(owner, "weight", in_dim, ROLE_IN).tolist() * groups)
        ctx.uf.union_many(outs, outs[:per_out] * groups)
    return ctx.along(out, out_shape, ch_dim)


class ConvRule(ModuleRule):
    """``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d``."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m = call.module
        return conv_like(
            ctx,
            ctx.label(call.arg(0, "input")),
            call.module_name,
            m.weight,
            m.bias is not None,
            m.groups,
            call.output.shape,
            len(m.kernel_size),
            call.where,
            m.transposed,
        )

    def update(self, module: nn.Module) -> None:
        """Sizes from the sliced weight; the attributes still hold the sizes before slicing."""
        w, groups = module.weight, module.groups
        if module.transposed:
            module.in_channels, module.out_channels = w.shape[0], w.shape[1] * groups
        elif groups > 1 and module.in_channels == groups:  # depthwise: a removed unit took a group
            per_out = module.out_channels // groups
            module.groups = w.shape[0] // per_out
            module.in_channels, module.out_channels = module.groups, w.shape[0]
        else:
            module.in_channels, module.out_channels = w.shape[1] * groups, w.shape[0]


class FunctionalConvRule(FunctionRule):
    """``F.conv{1,2,3}d`` with the weight a parameter of a module traced through."""

    def __init__(self, n_spatial: int) -> None:
        self.n_spatial = n_spatial

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x, w, b = call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias")
        groups = call.arg(6, "groups", 1)
        wname = ctx.param_names.get(id(w))
        bname = ctx.param_names.get(id(b)) if b is not None else None
        owner, _, wp = (wname or "").rpartition(".")
        if wname is None or wp != "weight" or (b is not None and bname != f"{owner}.bias".lstrip(".")):
            reason = f"{call.where}: convolution weights that are not a module's weight/bias"
            for t in (x, w, b):
                ctx.block(ctx.label(t), reason)
            return ctx.constant(ctx.sentinel(reason), call.output.shape)
        return conv_like(
            ctx, ctx.label(x), owner, w, b is not None, groups, call.output.shape, self.n_spatial, call.where
        )


register_rule(
    (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), ConvRule()
)
for _n, _f in ((1, F.conv1d), (2, F.conv2d), (3, F.conv3d)):
    register_rule(_f, FunctionalConvRule(_n))
