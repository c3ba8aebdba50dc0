"""Function rules for reductions, scans, per-channel spatial ops (pools, interpolate, pad) and matmul.

A reduction over a dim that carries channels, or a softmax/cumsum along it, reads channels without a
parameter consumer: pruning them is not the same as zeroing them, so the elements are marked inexact
(e.g. RMSNorm written with ``x.pow(2).mean(-1)``). Sorting or top-k along channels is blocked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchpare.prune.labels import LabelContext, varies_along
from torchpare.prune.rules.base import Call, FunctionRule, ModuleRule, func_name
from torchpare.prune.rules.linear import linear_like
from torchpare.prune.rules.ops import elementwise, functions_named, varies
from torchpare.prune.rules.registry import register_rule

__all__ = ["ReductionRule", "ScanRule", "SpatialRule", "PoolModuleRule", "PadRule", "MatmulRule", "OrderRule"]


def _dims(value: Any, ndim: int) -> list[int] | None:
    if value is None:
        return list(range(ndim))
    if isinstance(value, int):
        return [value % max(ndim, 1)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return [v % max(ndim, 1) for v in value]
    return None


def _mirror(out: Any, lab: torch.Tensor | None) -> Any:
    if isinstance(out, torch.Tensor):
        if lab is None:
            return None
        if lab.numel() == out.numel():
            return lab.reshape(out.shape)
        return lab.reshape(-1)[:1].reshape(()).expand(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_mirror(o, lab) for o in out)
    return None


class ReductionRule(FunctionRule):
    """``sum``/``mean``/``amax``/``max(dim)``/``std``...: keeps channel dims not reduced.

    Args:
        dim_pos: position of the ``dim`` argument.
    """

    def __init__(self, dim_pos: int = 1) -> None:
        self.dim_pos = dim_pos

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x = call.args[0] if call.args else call.kwargs.get("input")
        lab = ctx.label(x)
        if lab is None:
            return None
        other = call.arg(1, "other")
        if isinstance(other, torch.Tensor):  # torch.max(a, b) is elementwise
            out = call.output
            return elementwise(ctx, [lab, ctx.label(other)], out.shape, call.where)
        dims = _dims(call.arg(self.dim_pos, "dim", call.kwargs.get("axis")), lab.dim())
        if dims is None:
            ctx.block(lab, f"{call.where}: reduction over dims it cannot read")
            return _mirror(call.output, ctx.constant(ctx.sentinel(f"{call.where}: unreadable dims"), ()))
        if any(varies(ctx, lab, d) for d in dims):
            ctx.mark_inexact(lab, f"{call.where}: {func_name(call.func)} reduces over the channel dim")
            return _mirror(call.output, ctx.neutral(()))
        kept = lab
        for d in dims:
            if kept.dim() and kept.shape[d] > 0:
                kept = kept.narrow(d, 0, 1)
        return _mirror(call.output, kept)


class ScanRule(FunctionRule):
    """Shape-preserving ops along one dim (softmax, cumsum, normalize): inexact along channels."""

    def __init__(self, dim_pos: int = 1) -> None:
        self.dim_pos = dim_pos

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.args[0])
        if lab is None:
            return None
        dim = call.arg(self.dim_pos, "dim")
        dims = _dims(dim, lab.dim()) if dim is not None else list(range(lab.dim()))
        if dims is None or any(varies(ctx, lab, d) for d in dims):
            ctx.mark_inexact(lab, f"{call.where}: {func_name(call.func)} runs along the channel dim")
        return _mirror(call.output, lab)


class OrderRule(FunctionRule):
    """``sort``/``topk``/``argsort`` along a dim: blocked along channels (reorders by value)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.args[0])
        dim = (
            call.arg(2, "dim", -1) if call.func in (torch.topk, torch.Tensor.topk) else call.arg(1, "dim", -1)
        )
        if lab is None:
            return None
        if isinstance(dim, int) and lab.dim() and varies_along(lab, dim):
            ctx.block(lab, f"{call.where}: orders channels by value")
        kept = lab.narrow(dim, 0, 1) if lab.dim() and isinstance(dim, int) else lab
        out = call.output
        outs = out if isinstance(out, (tuple, list)) else (out,)
        labs = tuple(kept.expand(o.shape) if isinstance(o, torch.Tensor) else None for o in outs)
        return labs if isinstance(out, (tuple, list)) else labs[0]


class SpatialRule(FunctionRule):
    """Per-channel spatial ops on ``(N, C, *spatial)`` (pools, adaptive pools, interpolate).

    Args:
        n_spatial: number of trailing spatial dims (``None``: all dims after the first two).
    """

    def __init__(self, n_spatial: int | None = None) -> None:
        self.n_spatial = n_spatial

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.args[0] if call.args else call.kwargs.get("input"))
        if lab is None:
            return None
        n = self.n_spatial if self.n_spatial is not None else max(lab.dim() - 2, 0)
        return _spatial(ctx, call, lab, list(range(lab.dim() - n, lab.dim())))


class PoolModuleRule(ModuleRule):
    """Pooling modules (``nn.MaxPool2d``, ``nn.AdaptiveAvgPool2d``...) as trace leaves: per channel over
    their last ``n_spatial`` dims, as :class:`SpatialRule` for their functions.

    Args:
        n_spatial: number of trailing spatial dims the module pools over.
    """

    def __init__(self, n_spatial: int) -> None:
        self.functional = SpatialRule(n_spatial)

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        return self.functional.propagate(ctx, call)


def _spatial(ctx: LabelContext, call: Call, lab: torch.Tensor, dims: list[int]) -> Any:
    out = call.output
    hit = ctx.along_ids(lab)
    if (
        hit is not None
        and hit[1] not in dims
        and isinstance(out, torch.Tensor)
        and out.dim() == lab.dim()
        and out.shape[hit[1]] == lab.shape[hit[1]]
    ):
        return ctx.along(hit[0], out.shape, hit[1])  # channels on a dim the op keeps: nothing mixes
    kept = lab
    for d in dims:
        if varies_along(lab, d):
            ctx.block(lab, f"{call.where}: mixes positions that carry channels")
        if kept.shape[d] > 0:
            kept = kept.narrow(d, 0, 1)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    labs = tuple(kept.expand(o.shape) if isinstance(o, torch.Tensor) else None for o in outs)
    return labs if isinstance(out, (tuple, list)) else labs[0]


class PadRule(FunctionRule):
    """``F.pad``: per-channel when it pads only dims without channels; padding channels is blocked."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.args[0] if call.args else call.kwargs.get("input"))
        pad = call.arg(1, "pad")
        if lab is None:
            return None
        dims = [lab.dim() - 1 - i // 2 for i in range(len(pad)) if pad[i]]
        return _spatial(ctx, call, lab, sorted(set(dims)))


class MatmulRule(FunctionRule):
    """``a @ b`` (matmul/mm/bmm). With a parameter operand it is a linear layer; between activations
    the contracted channels are coupled and inexact (no parameter reads them)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        a, b = call.args[0], call.args[1]
        out = call.output
        if a.dim() < 2 or b.dim() < 2:
            la, lb = ctx.label(a), ctx.label(b)
            for lab in (la, lb):
                ctx.block(lab, f"{call.where}: matmul with a 1-D operand")
            return ctx.constant(ctx.sentinel(f"{call.where}: matmul with a 1-D operand"), out.shape)
        name_b = ctx.param_names.get(id(b))
        in_dim, out_dim = 0, 1
        base = getattr(b, "_base", None)
        transposed_param = (
            name_b is None
            and b.dim() == 2
            and base is not None
            and ctx.param_names.get(id(base)) is not None
            and tuple(b.shape) == tuple(base.shape)[::-1]
            and b.stride() == base.stride()[::-1]
        )
        if transposed_param:
            name_b, in_dim, out_dim = ctx.param_names[id(base)], 1, 0  # x @ self.weight.T
        if name_b is not None and b.dim() == 2:
            owner, _, pname = name_b.rpartition(".")
            return linear_like(
                ctx, ctx.label(a), owner, pname, None, out.shape, call.where, in_dim=in_dim, out_dim=out_dim
            )
        la, lb = ctx.label(a), ctx.label(b)
        if ctx.param_names.get(id(a)) is not None:
            ctx.block(lb, f"{call.where}: parameter on the left of matmul")
        ka, kb = varies_along(la, -1), varies_along(lb, -2)
        other_a = [d for d in range(la.dim() - 1) if varies_along(la, d)]
        other_b = [d for d in range(lb.dim()) if d != lb.dim() - 2 and varies_along(lb, d)]
        if (ka and other_a) or (kb and other_b):
            reason = f"{call.where}: matmul operand with channels on several dims"
            ctx.block(la, reason)
            ctx.block(lb, reason)
            return ctx.constant(ctx.sentinel(reason), out.shape)
        if ka or kb:
            ka_lab = la.narrow(-2, 0, 1).reshape(-1, la.shape[-1])[0]
            kb_lab = lb.narrow(-1, 0, 1).reshape(-1, lb.shape[-2])[0] if lb.numel() else lb
            ctx.union(ka_lab, kb_lab)
            reason = f"{call.where}: matmul contracts channels that no parameter reads"
            ctx.mark_inexact(ka_lab, reason)
            ctx.mark_inexact(kb_lab, reason)
        rows = ctx.neutral(la.shape[:-1] + (1,)) if ka else la.narrow(-1, 0, 1)
        cols = ctx.neutral(lb.shape[:-2] + (1, lb.shape[-1])) if kb else lb.narrow(-2, 0, 1)
        return elementwise(ctx, [rows, cols], out.shape, call.where)


register_rule(
    functions_named(
        [
            "sum",
            "mean",
            "nansum",
            "nanmean",
            "amax",
            "amin",
            "std",
            "var",
            "logsumexp",
            "prod",
            "all",
            "any",
            "argmax",
            "argmin",
            "count_nonzero",
        ],
        inplace=False,
    ),
    ReductionRule(),
)
register_rule(functions_named(["max", "min", "median", "nanmedian", "mode"], inplace=False), ReductionRule())
register_rule(functions_named(["norm"], inplace=False), ReductionRule(dim_pos=2))
register_rule(
    functions_named(
        ["softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logcumsumexp"], inplace=False
    ),
    ScanRule(),
)
register_rule(functions_named(["normalize"], inplace=False), ScanRule(dim_pos=2))
register_rule(functions_named(["sort", "argsort", "topk"], inplace=False), OrderRule())
register_rule(functions_named(["pad"], inplace=False), PadRule())
for _n, _names in {
    1: "avg_pool1d max_pool1d adaptive_avg_pool1d adaptive_max_pool1d lp_pool1d max_pool1d_with_indices",
    2: "avg_pool2d max_pool2d adaptive_avg_pool2d adaptive_max_pool2d lp_pool2d max_pool2d_with_indices",
    3: "avg_pool3d max_pool3d adaptive_avg_pool3d adaptive_max_pool3d lp_pool3d max_pool3d_with_indices",
}.items():
    register_rule(functions_named(_names.split(), inplace=False), SpatialRule(_n))
    register_rule(
        tuple(
            getattr(nn, f"{kind}Pool{_n}d")
            for kind in ("Avg", "Max", "AdaptiveAvg", "AdaptiveMax", "LP")
            if hasattr(nn, f"{kind}Pool{_n}d")
        ),
        PoolModuleRule(_n),
    )
register_rule(
    functions_named(["interpolate", "upsample", "upsample_nearest", "upsample_bilinear"], inplace=False),
    SpatialRule(),
)
register_rule(
    functions_named(["matmul", "mm", "bmm"], inplace=False) + (torch.Tensor.__matmul__,), MatmulRule()
)
