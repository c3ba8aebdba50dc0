"""Function rules for shape, movement and selection ops: replayed on the label tensors.

Re-running ``view``/``permute``/``cat``/``split``/``repeat_interleave``... with the same arguments on
the labels gives exact index maps for concat offsets, flatten-after-conv, split/chunk and GQA repeats.
Guards keep pruning safe where the op's arguments are hard-coded sizes:

* a reshape that spreads channels over more dims than before (``view(B, T, heads, head_dim)``) is
  blocked: the integers would be stale after pruning;
* slicing/selecting a subset of channel positions (``x[:, :16]``) is blocked;
* ``chunk`` couples the i-th channel of every chunk so chunks stay equal; ``split`` with explicit sizes
  along channels is blocked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchpare.prune.labels import LabelContext, varies_along
from torchpare.prune.rules.base import Call, FunctionRule, ModuleRule
from torchpare.prune.rules.ops import _cpu_index, _tensors, constant_element, functions_named, varies
from torchpare.prune.rules.registry import register_rule

__all__ = ["ReplayRule", "ReshapeRule", "FlattenModuleRule", "SelectRule", "ChunkRule", "SplitRule"]


def _replay(ctx: LabelContext, call: Call, func: Any = None) -> Any:
    """Call ``func`` (default: the traced one) with label tensors for the data argument(s).

    If the op refuses int64 label tensors, its inputs are blocked (and the report says so) rather
    than the trace failing.
    """
    try:
        return _replay_raw(ctx, call, func or call.func)
    except (RuntimeError, TypeError, IndexError, ValueError, NotImplementedError) as exc:
        reason = f"{call.where}: cannot replay on channel labels ({type(exc).__name__})"
        for t in _tensors(list(call.args)) + _tensors(list(call.kwargs.values())):
            ctx.block(ctx.label(t), reason)
        return _like(call.output, ctx.constant(ctx.sentinel(reason), ()))


def _like(out: Any, scalar: torch.Tensor) -> Any:
    if isinstance(out, torch.Tensor):
        return scalar.expand(out.shape)
    if isinstance(out, (list, tuple)):
        return tuple(_like(o, scalar) for o in out)
    return None


def _replay_raw(ctx: LabelContext, call: Call, func: Any) -> Any:
    args = list(call.args)
    if args and isinstance(args[0], (list, tuple)):  # cat / stack: a sequence of tensors
        args[0] = type(args[0])(ctx.label(t) if isinstance(t, torch.Tensor) else t for t in args[0])
        rest = [_cpu_index(a) for a in args[1:]]
        return func(args[0], *rest, **{k: _cpu_index(v) for k, v in call.kwargs.items()})
    kwargs = dict(call.kwargs)
    if args:
        data = ctx.label(args[0])
        rest = [_cpu_index(a) for a in args[1:]]
    else:  # keyword-only call, e.g. torch.flatten(input=x)
        key = "input" if "input" in kwargs else "tensors"
        value = kwargs.pop(key)
        data = (
            type(value)(ctx.label(t) for t in value) if isinstance(value, (list, tuple)) else ctx.label(value)
        )
        rest = []
        kwargs = {key: data, **{k: _cpu_index(v) for k, v in kwargs.items()}}
        return func(*rest, **kwargs)
    return func(data, *rest, **{k: _cpu_index(v) for k, v in kwargs.items()})


class ReplayRule(FunctionRule):
    """Pure data movement: the op replayed on labels is exact (permute, transpose, cat, repeat, flip)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        fast = None
        if call.func in _CATS:
            fast = _cat_along(ctx, call)
        elif call.func in _PERMUTES or call.func in _TRANSPOSES:
            fast = _permute_along(ctx, call)
        elif call.func in _ROLLS:
            fast = _roll_constant(ctx, call)
        return fast if fast is not None else _compact(ctx, _replay(ctx, call))


# Replayed labels at least this large that the op materialised are checked for a compact form.
_COMPACT_MIN = 1024


def _compact(ctx: LabelContext, lab: Any) -> Any:
    """``lab`` as ``ctx.along`` channels (or one constant) when a replay materialised a label that
    varies along one dim only, e.g. the ``reshape`` that ends a channel shuffle; else ``lab`` itself.

    The values are the same: later rules read them through the cheap paths made for ``along`` labels
    (1-D ids, strides) instead of whole tensors (``torch.unique`` over every position).
    """
    if not isinstance(lab, torch.Tensor) or lab.numel() < _COMPACT_MIN:
        return lab
    shape, strides, n = lab.shape, lab.stride(), lab.dim()
    if any(strides[d] == 0 and shape[d] > 1 for d in range(n)):  # a broadcast view: no values read
        varying = [d for d in range(n) if shape[d] > 1 and strides[d] != 0]
        if len(varying) == 1 and ctx.along_ids(lab) is None:
            d = varying[0]
            return ctx.along(lab.as_strided((shape[d],), (strides[d],)), shape, d)
        return lab
    found = None
    for d in range(n):
        if shape[d] <= 1:
            continue
        line = lab
        for o in range(n):
            if o != d and shape[o] > 1:
                line = line.narrow(o, 0, 1)
        flat = line.reshape(-1)
        if bool((flat != flat[0]).any()):
            if found is not None:
                return lab
            found = d, line
    if found is None:
        element = int(lab.reshape(-1)[0])
        return ctx.constant(element, shape) if bool((lab == element).all()) else lab
    d, line = found
    if not bool((lab == line).all()):
        return lab
    return ctx.along(line.reshape(-1).clone(), shape, d)


def _reshape_broadcast(lab: Any, out: Any) -> torch.Tensor | None:
    """A reshape of ``lab`` to ``out``'s shape when both end with the same dims along which ``lab`` is
    broadcast (``(N, C, H, W) -> (N, 2, C/2, H, W)`` of channel labels): only the leading dims are
    reshaped (a reshape keeps the flat order, so the trailing dims map to themselves), then
    broadcast back, instead of materialising every position; ``None`` when no trailing dim is such."""
    if not isinstance(lab, torch.Tensor) or not isinstance(out, torch.Tensor):
        return None
    shape, target, strides = tuple(lab.shape), tuple(out.shape), lab.stride()
    k = 0
    while (
        k < len(shape)
        and k < len(target)
        and shape[-1 - k] == target[-1 - k]
        and (strides[-1 - k] == 0 or shape[-1 - k] == 1)
    ):
        k += 1
    if k == 0 or all(n == 1 for n in shape[len(shape) - k :]):
        return None
    small = lab
    for d in range(len(shape) - k, len(shape)):
        small = small.narrow(d, 0, 1)
    return small.reshape(target[: len(target) - k] + (1,) * k).expand(target)


def _varying_dims(ctx: LabelContext, lab: torch.Tensor) -> list[int]:
    """``varying_dims(lab)``, with the stride and ``along`` shortcuts of :func:`.ops.varies`."""
    return [d for d in range(lab.dim()) if varies(ctx, lab, d)]


def _permute_along(ctx: LabelContext, call: Call) -> torch.Tensor | None:
    """``permute``/``transpose`` of channel labels: the channel ids move to their new dim (ConvNeXt's
    channels-last round trips), without replaying the op; ``None`` when that does not apply."""
    x, out = call.arg(0, "input"), call.output
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or out.dim() != x.dim():
        return None
    hit = ctx.along_ids(ctx.label(x))
    if hit is None or not out.dim():
        return None
    ids, d = hit
    n = out.dim()
    try:
        if call.func in _PERMUTES:
            rest = call.args[1:]
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            dims = [int(i) % n for i in (dims or call.kwargs.get("dims", ()))]
            e = dims.index(d)
        else:
            a, b = (int(v) % n for v in call.args[1:3])
            e = b if d == a else a if d == b else d
    except (TypeError, ValueError):
        return None
    if out.shape[e] != ids.shape[0]:
        return None
    return ctx.along(ids, out.shape, e)


def _roll_constant(ctx: LabelContext, call: Call) -> torch.Tensor | None:
    """``roll``/``flip`` along dims where the labels are constant (the shifted windows of Swin roll
    channel labels over space) leave them as they are; ``None`` when that does not apply."""
    x, out = call.arg(0, "input"), call.output
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return None
    if call.func in _ROLL_ONLY:
        dims = call.arg(2, "dims")
    else:  # flip(x, dims), x.flip(dims) or x.flip(*dims)
        rest = call.args[1:]
        dims = rest[0] if len(rest) == 1 else rest if rest else call.kwargs.get("dims")
    if isinstance(dims, int):
        dims = (dims,)
    if not isinstance(dims, (list, tuple)) or not dims or not all(isinstance(d, int) for d in dims):
        return None  # roll without dims runs over the flattened tensor
    lab = ctx.label(x)
    if lab is None or lab.shape != out.shape or not lab.dim():
        return None
    if all(lab.stride(d) == 0 or lab.shape[d] <= 1 for d in dims):
        return lab
    return None


def _cat_along(ctx: LabelContext, call: Call) -> torch.Tensor | None:
    """``cat`` of channel labels along their channel dim (a DenseNet concat): the output carries the
    concatenated channel ids, without replaying the op; ``None`` when that does not apply."""
    parts, out = call.arg(0, "tensors"), call.output
    if not isinstance(parts, (list, tuple)) or not parts or not isinstance(out, torch.Tensor):
        return None
    dim = call.arg(1, "dim", 0)
    if not isinstance(dim, int) or out.dim() == 0:
        return None
    dim %= out.dim()
    ids = []
    for t in parts:
        hit = ctx.along_ids(ctx.label(t)) if isinstance(t, torch.Tensor) else None
        if hit is None or hit[1] != dim or t.dim() != out.dim():
            return None
        ids.append(hit[0])
    return ctx.along(torch.cat(ids), out.shape, dim)


class ReshapeRule(FunctionRule):
    """``view``/``reshape``/``unflatten``/``flatten``: replayed, blocked if channels spread over more dims."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        func = call.func
        if func is torch.Tensor.view:
            if any(isinstance(a, torch.dtype) for a in call.args[1:]):
                lab = ctx.label(call.args[0])
                ctx.block(lab, f"{call.where}: view as another dtype")
                return ctx.constant(ctx.sentinel(f"{call.where}: view as another dtype"), call.output.shape)
            func = torch.Tensor.reshape
        elif func is torch.Tensor.view_as:
            func = torch.Tensor.reshape_as
        fast = _reshape_along(ctx, ctx.label(call.args[0] if call.args else call.kwargs.get("input")), call.output)
        if fast is not None:
            return fast
        out = _reshape_broadcast(ctx.label(call.args[0] if call.args else call.kwargs.get("input")), call.output)
        out = _compact(ctx, out if out is not None else _replay(ctx, call, func))
        before = _varying_dims(ctx, ctx.label(call.args[0]))
        after = _varying_dims(ctx, out)
        if len(after) > len(before):
            lab = ctx.label(call.args[0])
            reason = f"{call.where}: reshape splits channels over several dims with fixed sizes"
            ctx.block(lab, reason)
        return out


def _reshape_along(ctx: LabelContext, lab: Any, out: Any) -> torch.Tensor | None:
    """Labels of a reshape of channel labels ``lab`` (made by ``ctx.along``) when the channel dim
    survives whole, e.g. ``(N, C, 1, 1) -> (N, C)``, or of a label constant everywhere, without
    replaying it; ``None`` otherwise.

    A reshape keeps the flat order: output dim ``e`` carries the channels exactly when it has their
    size and the dims before it hold as many entries as the dims before the channel dim did.
    """
    if not isinstance(lab, torch.Tensor) or not isinstance(out, torch.Tensor):
        return None
    hit = ctx.along_ids(lab)
    if hit is None:
        if lab.numel() and not any(lab.stride()):  # one label everywhere (the model input): stays so
            return lab.as_strided(tuple(out.shape), (0,) * out.dim())
        return None
    ids, d = hit
    shape, target = tuple(lab.shape), tuple(out.shape)
    before = 1
    for n in shape[:d]:
        before *= n
    prefix = 1
    for e, n in enumerate(target):
        if prefix == before and n == shape[d]:
            return ctx.along(ids, target, e)
        prefix *= n
        if prefix > before:
            return None
    return None


class FlattenModuleRule(ModuleRule):
    """``nn.Flatten`` / ``nn.Unflatten`` as trace leaves: the reshape of :class:`ReshapeRule`."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m, x = call.module, call.arg(0, "input")
        if isinstance(m, nn.Flatten):
            as_call = Call(call.module_name, None, torch.flatten, (x, m.start_dim, m.end_dim), {}, call.output)
        else:
            as_call = Call(call.module_name, None, torch.unflatten, (x, m.dim, m.unflattened_size), {}, call.output)
        return ReshapeRule().propagate(ctx, as_call)


class SelectRule(FunctionRule):
    """Indexing and slicing: exact, unless it keeps only part of the channel positions.

    The check runs after the forward (``ctx.defer``), when positions coupled later (a class token and
    patch tokens read by the same LayerNorm) are known to be one channel.
    """

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        lab = ctx.label(call.args[0])
        element = constant_element(lab) if call.func is _GETITEM and lab is not None else None
        if element is not None and isinstance(call.output, torch.Tensor):
            # any selection of one label everywhere holds that label: no replay needed (the check
            # below still runs: an empty selection drops the channel)
            out = ctx.constant(element, call.output.shape)
        else:
            out = _slice_along(ctx, call, lab) if call.func is _GETITEM else None
            if out is None:
                out = _replay(ctx, call)
        if lab is not None and isinstance(out, torch.Tensor):
            where = call.where

            def check(lab: torch.Tensor = lab, out: torch.Tensor = out) -> None:
                if ctx.roots(out) != ctx.roots(lab):
                    ctx.block(lab, f"{where}: selects part of the channels by position")

            ctx.defer(check)
        return out


_GETITEM = torch.Tensor.__getitem__


def _slice_along(ctx: LabelContext, call: Call, lab: torch.Tensor | None) -> torch.Tensor | None:
    """``x[a:b, ::2, ...]`` (basic slices only) of channel labels that keeps every channel position
    (Swin's patch merging, ``x[:, 0::2, 1::2, :]``): the channels stay on their dim, without
    replaying; ``None`` when that does not apply."""
    out = call.output
    if lab is None or not isinstance(out, torch.Tensor) or out.dim() != lab.dim():
        return None
    hit = ctx.along_ids(lab)
    index = call.args[1] if len(call.args) > 1 else None
    if hit is None:
        return None
    index = index if isinstance(index, tuple) else (index,)
    if len(index) > lab.dim() or not all(type(i) is slice for i in index):
        return None
    ids, d = hit
    if d < len(index):
        sl = index[d]
        if sl.start not in (None, 0) or sl.step not in (None, 1) or out.shape[d] != lab.shape[d]:
            return None
    return ctx.along(ids, out.shape, d)


class ChunkRule(FunctionRule):
    """``chunk``/``unbind``/``tensor_split(n)``: equal parts; their i-th channels are coupled."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        parts = _replay(ctx, call)
        shapes = {tuple(p.shape) for p in parts}
        if len(parts) > 1 and len(shapes) == 1:
            for p in parts[1:]:
                ctx.union(parts[0], p)
        elif len(parts) > 1:
            lab = ctx.label(call.args[0])
            dim = call.arg(2, "dim", 0)
            if varies_along(lab, dim):
                ctx.block(lab, f"{call.where}: unequal chunks of channels")
        return parts


class SplitRule(FunctionRule):
    """``split`` with fixed sizes: blocked along a channel dim (the sizes would be stale)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        parts = _replay(ctx, call)
        lab = ctx.label(call.args[0])
        dim = call.arg(2, "dim", 0)
        if len(parts) > 1 and varies_along(lab, dim):
            ctx.block(lab, f"{call.where}: split with fixed sizes along channels")
        return parts


_MOVE = [
    "permute",
    "transpose",
    "swapaxes",
    "swapdims",
    "t",
    "movedim",
    "moveaxis",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "repeat",
    "repeat_interleave",
    "tile",
    "flip",
    "fliplr",
    "flipud",
    "roll",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "dstack",
    "pixel_shuffle",
    "pixel_unshuffle",
    "broadcast_to",
    "atleast_1d",
    "atleast_2d",
    "atleast_3d",
    "ravel",
]
_CATS = functions_named(["cat", "concat", "concatenate"], inplace=False)
_PERMUTES = functions_named(["permute"], inplace=False)
_ROLL_ONLY = functions_named(["roll"], inplace=False)
_ROLLS = _ROLL_ONLY + functions_named(["flip"], inplace=False)
_TRANSPOSES = functions_named(["transpose", "swapaxes", "swapdims"], inplace=False)
_RESHAPE = ["view", "view_as", "reshape", "reshape_as", "flatten", "unflatten"]
_SELECT = [
    "__getitem__",
    "narrow",
    "select",
    "index_select",
    "gather",
    "take_along_dim",
    "masked_select",
    "diagonal",
]

register_rule(
    functions_named(_MOVE, inplace=False)
    + (
        torch.Tensor.squeeze_,
        torch.Tensor.unsqueeze_,
        torch.Tensor.t_,
        torch.Tensor.transpose_,
        torch.Tensor.T.__get__,
        torch.Tensor.mT.__get__,
    ),
    ReplayRule(),
)
register_rule(functions_named(_RESHAPE, inplace=False), ReshapeRule())
register_rule((nn.Flatten, nn.Unflatten), FlattenModuleRule())
register_rule(functions_named(_SELECT, inplace=False), SelectRule())
register_rule(functions_named(["chunk", "unbind"], inplace=False), ChunkRule())
register_rule(functions_named(["split", "split_with_sizes", "tensor_split"], inplace=False), SplitRule())
