"""``nn.Linear`` and ``F.linear``: input features are weight columns, output features weight rows."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune.labels import LabelContext
from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, FunctionRule, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = ["LinearRule", "FunctionalLinearRule", "linear_like"]


def linear_like(
    ctx: LabelContext,
    x: torch.Tensor | None,
    owner: str,
    weight: str,
    bias: str | None,
    out_shape: Any,
    where: str,
    in_dim: int = 1,
    out_dim: int = 0,
) -> torch.Tensor:
    """Couple the last dim of ``x`` with ``weight``'s ``in_dim`` and return labels for the output rows.

    Args:
        ctx: label context.
        x: labels of the input (features on the last dim).
        owner: module owning ``weight``/``bias``.
        weight, bias: parameter names (``bias=None``: none).
        out_shape: shape of the output.
        where: location for reports.
        in_dim, out_dim: dims of ``weight`` holding input and output features.
    """
    if x is not None:
        ctx.param(owner, weight, in_dim, ROLE_IN, tie=ctx.channels(x, -1, where))
    out = ctx.param(owner, weight, out_dim, ROLE_OUT)
    if bias is not None:
        ctx.param(owner, bias, 0, ROLE_OUT, tie=out)
    return ctx.along(out, out_shape, -1)


@register_rule(nn.Linear)
class LinearRule(ModuleRule):
    """``nn.Linear``: rows (and bias) produce output features, columns read input features."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m = call.module
        bias = "bias" if m.bias is not None else None
        return linear_like(
            ctx,
            ctx.label(call.arg(0, "input")),
            call.module_name,
            "weight",
            bias,
            call.output.shape,
            call.where,
        )

    def update(self, module: nn.Module) -> None:
        module.out_features, module.in_features = module.weight.shape


class FunctionalLinearRule(FunctionRule):
    """``F.linear(x, W, b)`` with ``W`` a parameter of a module traced through (not a leaf)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x, w, b = call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias")
        wname = ctx.param_names.get(id(w))
        bname = ctx.param_names.get(id(b)) if b is not None else None
        if wname is None or (b is not None and bname is None):
            which, t = ("weight", w) if wname is None else ("bias", b)
            if ctx.has_label(t):  # made by a traced op: a cloned or concatenated parameter (Swin-V2 qkv bias)
                how = "is computed from a parameter inside the forward, not a parameter itself"
            else:
                how = "is neither a parameter nor computed by a traced op"
            reason = f"{call.where}: F.linear {which} {how}, so it cannot be sliced"
            for t in (x, w, b):
                ctx.block(ctx.label(t), reason)
            return ctx.constant(ctx.sentinel(reason), call.output.shape)
        owner, _, wp = wname.rpartition(".")
        bowner, _, bp = (bname or "").rpartition(".")
        if bname is not None and bowner != owner:
            ctx.union(ctx.param(owner, wp, 0, ROLE_OUT), ctx.param(bowner, bp, 0, ROLE_OUT))
            bp = None
        return linear_like(ctx, ctx.label(x), owner, wp, bp if bname else None, call.output.shape, call.where)


register_rule(F.linear, FunctionalLinearRule())
