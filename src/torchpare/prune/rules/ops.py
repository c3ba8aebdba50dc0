"""Function rules for elementwise ops, identities, tensor factories and in-place writes.

Elementwise ops with broadcasting union the broadcast-aligned labels of their tensor arguments: a
residual ``a + b`` couples channel ``c`` of ``a`` with channel ``c`` of ``b``. An operand broadcast
along a dim where the other operand carries channels does not couple those channels (``x * scalar``);
if it carries channels of its own on another dim (an outer product) the op is blocked.
Shape and selection ops live in :mod:`.shape`, reductions and pools in :mod:`.reduce`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune.labels import NEUTRAL, LabelContext, distinct, varies_along
from torchpare.prune.rules.base import Call, FunctionRule, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = [
    "ElementwiseRule",
    "ElementwiseModuleRule",
    "IdentityRule",
    "NeutralRule",
    "SetItemRule",
    "PReLURule",
    "GLURule",
    "elementwise",
    "functions_named",
]

_UNARY = [
    "relu",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardtanh",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "softplus",
    "softsign",
    "hardswish",
    "hardsigmoid",
    "mish",
    "logsigmoid",
    "tanhshrink",
    "hardshrink",
    "softshrink",
    "threshold",
    "rrelu",
    "neg",
    "negative",
    "abs",
    "absolute",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "sqrt",
    "rsqrt",
    "square",
    "reciprocal",
    "sin",
    "cos",
    "tan",
    "sinh",
    "cosh",
    "asin",
    "acos",
    "atan",
    "asinh",
    "acosh",
    "atanh",
    "erf",
    "erfc",
    "erfinv",
    "sign",
    "sgn",
    "floor",
    "ceil",
    "round",
    "trunc",
    "frac",
    "clamp",
    "clamp_min",
    "clamp_max",
    "clip",
    "nan_to_num",
    "positive",
    "bitwise_not",
    "logical_not",
    "isnan",
    "isinf",
    "isfinite",
    "signbit",
    "sigmoid_",
    "tril",
    "triu",
    "fill_",
    "zero_",
    "masked_fill",
    "dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
]
_BINARY = [
    "add",
    "sub",
    "subtract",
    "mul",
    "multiply",
    "div",
    "divide",
    "true_divide",
    "floor_divide",
    "rsub",
    "pow",
    "float_power",
    "fmod",
    "remainder",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "greater",
    "less",
    "equal",
    "not_equal",
    "logical_and",
    "logical_or",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "atan2",
    "hypot",
    "copysign",
    "xlogy",
    "lerp",
    "addcmul",
    "addcdiv",
    "where",
    "copy_",
    "masked_fill_",
    "masked_scatter",
]
_DUNDER = ["add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "and", "or", "xor"]
_IDENTITY = [
    "clone",
    "detach",
    "contiguous",
    "to",
    "float",
    "half",
    "double",
    "bfloat16",
    "type",
    "type_as",
    "cpu",
    "cuda",
    "requires_grad_",
    "detach_",
    "pin_memory",
]
_FACTORY_LIKE = [
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "rand_like",
    "randn_like",
    "randint_like",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "new_tensor",
]


def functions_named(names: list[str], inplace: bool = True) -> tuple[Any, ...]:
    """Every torch function / Tensor method / ``F`` function object with one of ``names`` (and ``name_``)."""
    found: list[Any] = []
    for name in names:
        for n in (name, name + "_") if inplace else (name,):
            for space in (torch, torch.Tensor, F, torch.special):
                obj = getattr(space, n, None)
                if obj is not None and callable(obj) and not isinstance(obj, type) and obj not in found:
                    found.append(obj)
    return tuple(found)


def elementwise(
    ctx: LabelContext, labels: list[torch.Tensor | None], out_shape: Any, where: str
) -> torch.Tensor:
    """Union broadcast-aligned ``labels`` and return the output label of shape ``out_shape``."""
    out_shape = tuple(out_shape)
    labs = [lab for lab in labels if lab is not None]
    if not labs:
        return ctx.neutral(out_shape)
    if len(labs) == 1 and tuple(labs[0].shape) == out_shape:  # unary op: nothing to align or unite
        return labs[0]
    if len(labs) == 2 and tuple(labs[0].shape) == out_shape == tuple(labs[1].shape):
        # a residual add of two channel labels: unite the channels, no broadcast to check
        a, b = ctx.along_ids(labs[0]), ctx.along_ids(labs[1])
        # (no neutral entry in the first to fill from the second, as the general path below does)
        if a is not None and b is not None and a[1] == b[1] and not _any_neutral(ctx, labs[0]):
            ctx.union(a[0], b[0])
            return labs[0]
    n = len(out_shape)
    fast = _elementwise_lines(ctx, labs, out_shape)
    if fast is not None:
        return fast
    aligned = [
        lab.reshape((1,) * (n - lab.dim()) + tuple(lab.shape)) if lab.dim() < n else lab for lab in labs
    ]
    participants: list[torch.Tensor] = []
    for i, lab in enumerate(aligned):
        bdims = [d for d in range(n) if lab.shape[d] == 1 and out_shape[d] > 1]
        if bdims:
            others = [o for j, o in enumerate(aligned) if j != i]
            coupled = any(varies(ctx, o, d) for o in others for d in bdims if o.shape[d] > 1)
            if coupled:
                if len(distinct(lab)) <= 1:
                    continue  # a scalar-like operand broadcast over channels couples nothing
                for lb in labs:
                    ctx.block(lb, f"{where}: outer-product broadcast of channels")
                return ctx.constant(ctx.sentinel(f"{where}: outer-product broadcast of channels"), out_shape)
        participants.append(lab)
    if not participants:
        participants = aligned
    out = participants[0].expand(out_shape) if tuple(participants[0].shape) != out_shape else participants[0]
    for other in participants[1:]:
        ctx.union(out, other)
        o = other.expand(out_shape)
        if _any_neutral(ctx, out):
            out = torch.where(out == NEUTRAL, o, out)
    return out


def _line(ctx: LabelContext, lab: torch.Tensor, out_shape: tuple[int, ...]) -> tuple[int, Any] | None:
    """What ``lab`` (right-aligned to ``out_shape``) holds, read off its strides without its values:
    ``(-1, element)`` when it is one label everywhere, ``(dim, ids)`` when it varies only along output
    dim ``dim`` (1-D ``ids``, a view), ``None`` otherwise."""
    if lab.dim() > len(out_shape):
        return None
    found = None
    shape, strides = lab.shape, lab.stride()
    for d in range(lab.dim()):
        if shape[d] > 1 and strides[d] != 0:
            if found is not None:
                return None
            found = d
    if found is None:
        if not lab.numel():
            return None
        return -1, int(lab.as_strided((), (), lab.storage_offset()))
    return found + len(out_shape) - lab.dim(), lab.as_strided((shape[found],), (strides[found],))


def constant_element(lab: torch.Tensor) -> int | None:
    """The one element of a label that holds it everywhere (read off its strides), else ``None``."""
    shape, strides = lab.shape, lab.stride()
    for d in range(lab.dim()):
        if shape[d] > 1 and strides[d] != 0:
            return None
    if not lab.numel():
        return None
    return int(lab.as_strided((), (), lab.storage_offset()))


def _elementwise_lines(
    ctx: LabelContext, labs: list[torch.Tensor], out_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """:func:`elementwise` when every operand is one label everywhere or channels along one shared dim
    (``x * rsqrt(var)``, ``weight * x``, masks of constants): the same unions and output values, on
    1-D ids instead of broadcast tensors; ``None`` when that does not apply.

    Operands that are all neutral couple nothing and are dropped, as the general path leaves them
    (skipped as broadcast scalars, or no-op unions and fills). With channels on one dim nothing is an
    outer product, so the general path unites the operands' ids entry by entry in order and fills
    neutral entries from later operands: done here on the 1-D ids. Constants only: their one
    elements are united in order, the first non-neutral one labels the output.
    """
    lines = []
    for lab in labs:
        line = _line(ctx, lab, out_shape)
        if line is None:
            return None
        lines.append(line)
    vec_dims = {d for d, _ in lines if d >= 0}
    if not vec_dims:
        cur = NEUTRAL
        for _, e in lines:
            if cur == NEUTRAL:
                cur = e
            elif e != NEUTRAL and e != cur:
                ctx.uf.union(cur, e)
        return ctx.constant(cur, out_shape)
    if len(vec_dims) > 1 or any(d < 0 and e != NEUTRAL for d, e in lines):
        return None
    dim = vec_dims.pop()
    first, cur, filled = None, None, False
    for lab, (d, ids) in zip(labs, lines):
        if d < 0:
            continue  # all neutral
        if cur is None:
            first, cur = lab, ids
            continue
        ctx.union(cur, ids)
        if bool((cur == NEUTRAL).any()):
            cur, filled = torch.where(cur == NEUTRAL, ids, cur), True
    if not filled and tuple(first.shape) == out_shape:
        return first
    return ctx.along(cur, out_shape, dim)


def varies(ctx: LabelContext, lab: torch.Tensor, d: int) -> bool:
    """:func:`~torchpare.prune.labels.varies_along`, answered from the strides or the ids of a label
    made by ``ctx.along`` where it can (a run of elements varies; a stride-0 dim does not)."""
    if lab.dim() == 0:
        return False
    d %= lab.dim()
    if lab.shape[d] <= 1 or lab.stride(d) == 0:
        return False
    hit = ctx.along_ids(lab)
    if hit is not None and hit[1] == d and ctx.run_start(hit[0]) is not None:
        return True
    return varies_along(lab, d)


def _any_neutral(ctx: LabelContext, lab: torch.Tensor) -> bool:
    """``(lab == NEUTRAL).any()`` without materializing the dims ``lab`` is expanded along."""
    hit = ctx.along_ids(lab)
    if hit is not None and ctx.run_start(hit[0]) is not None:
        return False  # channel ids made by the context: never neutral
    for d in range(lab.dim()):
        if lab.shape[d] > 1 and lab.stride(d) == 0:
            lab = lab.narrow(d, 0, 1)
    return bool((lab == NEUTRAL).any())


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


class ElementwiseRule(FunctionRule):
    """Ops applied entry by entry, with broadcasting (activations, arithmetic, comparisons, where)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        out = call.output
        if not isinstance(out, torch.Tensor):
            return None
        tensors = _tensors(list(call.args)) + _tensors(list(call.kwargs.values()))
        if len(tensors) == 1:  # unary (relu, exp...): the labels pass through unchanged
            lab = ctx.label(tensors[0])
            if lab is not None and lab.shape == out.shape:
                return lab
        return elementwise(ctx, [ctx.label(t) for t in tensors], out.shape, call.where)


class ElementwiseModuleRule(ModuleRule):
    """Parameter-free modules applied entry by entry (``nn.ReLU``, ``nn.GELU``, ``nn.Dropout`` in eval,
    ``nn.Identity``): the output has the labels of the input.

    Tracing them as leaves gives the same groups as tracing their function through, and skips the
    per-call Python dispatch of the trace. A subclass with its own ``forward`` is traced through.
    """

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x, out = call.arg(0, "input"), call.output
        if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and x.shape == out.shape:
            return ctx.label(x)
        lab = ctx.label(x)
        reason = f"{call.where}: output shape differs from its input's"
        ctx.block(lab, reason)
        return ctx.constant(ctx.sentinel(reason), out.shape) if isinstance(out, torch.Tensor) else None


class IdentityRule(FunctionRule):
    """Ops returning the same values, maybe in another dtype or device (``to``, ``clone``, ``detach``)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        out = call.output
        lab = ctx.label(call.args[0]) if call.args else None
        if isinstance(out, torch.Tensor) and lab is not None and tuple(lab.shape) == tuple(out.shape):
            return lab
        return ElementwiseRule().propagate(ctx, call)


class NeutralRule(FunctionRule):
    """Fresh tensors whose values carry no channel (``zeros_like``, ``new_ones``)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        out = call.output
        return ctx.neutral(out.shape) if isinstance(out, torch.Tensor) else None


class SetItemRule(FunctionRule):
    """``x[idx] = v``: couples the written entries of ``x`` with ``v``; a write into part of the channel
    positions is blocked (the hard-coded index would point elsewhere after pruning)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x, idx, v = call.args[0], call.args[1], call.args[2]
        lab = ctx.label(x)
        if lab is None:
            return None
        sub = lab[_cpu_index(idx)]
        where = call.where

        def check() -> None:
            if ctx.roots(sub) != ctx.roots(lab):
                ctx.block(lab, f"{where}: writes into part of the channels")

        ctx.defer(check)
        vl = ctx.label(v)
        if vl is not None:
            elementwise(ctx, [sub, vl], sub.shape, call.where)
        return None


def _cpu_index(idx: Any) -> Any:
    if isinstance(idx, torch.Tensor):
        return idx.cpu()
    if isinstance(idx, tuple):
        return tuple(_cpu_index(i) for i in idx)
    if isinstance(idx, list):
        return [_cpu_index(i) for i in idx]
    return idx


class PReLURule(FunctionRule):
    """``F.prelu(x, weight)``: one weight per channel (dim 1), or one shared weight."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        x, w = call.arg(0, "input"), call.arg(1, "weight")
        lab = ctx.label(x)
        name = ctx.param_names.get(id(w))
        if w.numel() == 1 or lab is None:
            return lab
        if name is None:
            reason = f"{call.where}: PReLU weight is not a parameter"
            ctx.block(lab, reason)
            return lab
        owner, _, pname = name.rpartition(".")
        ids = ctx.param(owner, pname, 0, "out")
        ctx.union(ctx.channels(lab, 1 if lab.dim() > 1 else 0, call.where), ids)
        if isinstance(getattr(ctx.modules.get(owner), "num_parameters", None), int):  # nn.PReLU's count
            ctx.size_attribute(owner, "num_parameters", ids)
        return lab


class GLURule(FunctionRule):
    """``F.glu(x, dim)``: halves ``a * sigmoid(b)``; channel ``i`` of both halves is one unit."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.arg(0, "input"))
        if lab is None:
            return None
        a, b = lab.chunk(2, dim=call.arg(1, "dim", -1))
        ctx.union(a, b)
        return a


_dunders = tuple(
    getattr(torch.Tensor, f"__{p}{n}__")
    for n in _DUNDER
    for p in ("", "r", "i")
    if hasattr(torch.Tensor, f"__{p}{n}__")
)
register_rule(
    functions_named(_UNARY + _BINARY)
    + _dunders
    + (
        torch.Tensor.__neg__,
        torch.Tensor.__abs__,
        torch.Tensor.__invert__,
        torch.Tensor.__eq__,
        torch.Tensor.__ne__,
        torch.Tensor.__lt__,
        torch.Tensor.__le__,
        torch.Tensor.__gt__,
        torch.Tensor.__ge__,
    ),
    ElementwiseRule(),
)
register_rule(functions_named(_IDENTITY, inplace=False) + (torch.Tensor.data.__get__,), IdentityRule())
register_rule(functions_named(_FACTORY_LIKE, inplace=False), NeutralRule())
register_rule(torch.Tensor.__setitem__, SetItemRule())
register_rule(F.prelu, PReLURule())
register_rule(F.glu, GLURule())
register_rule(
    (
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.RReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Sigmoid,
        nn.Tanh,
        nn.Hardtanh,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.Softplus,
        nn.Softsign,
        nn.LogSigmoid,
        nn.Tanhshrink,
        nn.Hardshrink,
        nn.Softshrink,
        nn.Threshold,
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
        nn.Identity,
    ),
    ElementwiseModuleRule(),
)
