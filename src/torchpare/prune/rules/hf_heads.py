"""Shared pieces of the Hugging Face head rules: head layouts, label helpers, the blocking base class.

See :mod:`torchpare.prune.rules.hf_attention` for the rules and how classes get them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchpare.prune.rules.base import ROLE_OUT, Call, ModuleRule

__all__ = ["UnsupportedAttentionError", "HEADS_WIDTH_CLASSES"]

# Module attributes holding head counts that forwards (or attention kernels) read; refreshed after surgery.
_Q_HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads")
_KV_HEAD_ATTRS = ("num_key_value_heads", "num_kv_heads")
# Keyword names under which cross-attention modules receive the encoder states that feed keys/values.
_KV_SOURCE_ARGS = ("key_value_states", "encoder_hidden_states")


# Parameters holding one slice per query head, sliced with their heads: path -> head dim.
# gpt-oss attention sinks (n_heads,); Swin's relative position bias table (positions, n_heads).
_PER_HEAD_PARAMS = {
    "sinks": 0,
    "relative_position_bias.relative_position_bias_table": 1,
    "relative_attention_bias.weight": 1,  # T5: (buckets, n_heads), shared by later layers via position_bias
}
# Module attributes holding the hidden (residual) width: refreshed to the projections' input width.
_HIDDEN_ATTRS = ("embed_dim", "hidden_size", "dim", "d_model")
# Classes whose forward reads those attributes as the concatenated heads' width (older transformers:
# ``attn_output.reshape(bsz, q_len, self.hidden_size)``), found by the probe (hf_head_probe.py).
HEADS_WIDTH_CLASSES: set[type] = set()


def _set_widths(module: nn.Module, hidden: int, heads_width: int) -> None:
    """Refresh the width attributes: the hidden width, or the heads' width for HEADS_WIDTH_CLASSES."""
    _set_if_present(module, _HIDDEN_ATTRS, heads_width if type(module) in HEADS_WIDTH_CLASSES else hidden)


def _per_head_param(module: nn.Module, path: str, n_q: int) -> torch.Tensor | None:
    # the module tables, as module.get_parameter(path) reads them, without its AttributeError when the
    # path is absent (most modules, every call of the head rules)
    *owners, pname = path.split(".")
    for owner in owners:
        module = module._modules.get(owner)
        if module is None:
            return None
    p = module._parameters.get(pname)
    if p is None:
        return None
    dim = _PER_HEAD_PARAMS[path]
    return p if p.dim() == dim + 1 and p.shape[dim] == n_q else None


class UnsupportedAttentionError(ValueError):
    """An attention module matched by class has a layout this rule cannot prune by heads."""


def _join(prefix: str, name: str) -> str:
    return ".".join(part for part in (prefix, name) if part)


_SIGNATURES: dict[Any, inspect.Signature] = {}


def _signature(forward: Any) -> inspect.Signature:
    """``inspect.signature(forward)``, once per function for bound methods (a class's ``forward``)."""
    func = getattr(forward, "__func__", None)
    if func is None:
        return inspect.signature(forward)
    sig = _SIGNATURES.get(func)
    if sig is None:
        sig = _SIGNATURES[func] = inspect.signature(forward)
    return sig


def _bind(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (attention forwards take most of them as keywords)."""
    try:
        bound = _signature(call.module.forward).bind_partial(*call.args, **call.kwargs)
    except (TypeError, ValueError):
        return dict(call.kwargs)
    args = dict(bound.arguments)
    args.update(args.pop("kwargs", {}) or {})
    return args


def _input_channels(ctx: Any, call: Call, args: dict[str, Any], name: str) -> torch.Tensor | None:
    t = args.get(name)
    if not isinstance(t, torch.Tensor):
        return None
    return ctx.channels(ctx.label(t), -1, call.where)


def _hidden_channels(ctx: Any, call: Call, args: dict[str, Any]) -> torch.Tensor:
    """Channel labels of the states feeding the queries: ``hidden_states`` or the first tensor argument.

    Raises:
        UnsupportedAttentionError: no tensor input (its input columns could not be tied to a producer).
    """
    found = _input_channels(ctx, call, args, "hidden_states")
    if found is not None:
        return found
    first = next((a for a in call.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    if first is None:
        raise UnsupportedAttentionError(
            f"{type(call.module).__name__} at {call.module_name!r}: no hidden_states tensor among its inputs."
        )
    return ctx.channels(ctx.label(first), -1, call.where)


def _varies_only_along(lab: torch.Tensor, dim: int) -> bool:
    """Whether the label tensor changes along ``dim`` and along no other dim."""
    for d in range(lab.dim()):
        if lab.shape[d] < 2:
            continue
        same = bool((lab == lab.narrow(d, 0, 1)).all())
        if (d == dim) == same:
            return False
    return lab.shape[dim] > 1


def _guard_per_head_inputs(ctx: Any, call: Call, n_q: int, per_q_head: torch.Tensor) -> None:
    """Tie or block another input that carries one slice per head (dim 1 of a 4-D tensor).

    A position bias made by an earlier attention leaf (T5's ``position_bias``) carries that leaf's head
    labels along dim 1: they are unioned with this module's heads, so heads are pruned across layers
    together. Anything else (an ALiBi tensor built from the config, a bias from outside) blocks the
    heads: the rule does not slice it, so removing a head would break its shape.
    """
    if n_q < 2:
        return
    for t in [*call.args, *call.kwargs.values()]:
        if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 4 and t.shape[1] == n_q):
            continue
        lab = ctx.label(t)
        if lab is not None and _varies_only_along(lab, 1):
            per_head = ctx.channels(lab, 1, call.where)
            if len(ctx.roots(per_head)) == n_q:
                ctx.union(per_head, per_q_head)
                continue
        reason = (
            f"{type(call.module).__name__} at {call.module_name!r} receives a per-head input of shape "
            f"{tuple(t.shape)} that head pruning does not slice"
        )
        ctx.block(per_q_head, reason)
        ctx.block(lab, reason)


def _linear_like_sizes(layer: nn.Module) -> tuple[int, int]:
    """``(in, out)`` of an ``nn.Linear`` (weight ``(out, in)``) or an HF ``Conv1D`` (weight ``(in, out)``)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    w = layer.weight
    return int(w.shape[0]), int(w.shape[1])


def _refresh_linear(layer: nn.Module) -> None:
    if isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = (int(s) for s in layer.weight.shape)
    elif hasattr(layer, "nf") and hasattr(layer, "nx"):  # HF Conv1D reads nf in forward
        layer.nx, layer.nf = (int(s) for s in layer.weight.shape)


def _set_if_present(module: nn.Module, names: Iterable[str], value: int) -> None:
    for attr in names:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, value)


def _check_params(module: nn.Module, allowed: set[str], head_dim: int, who: str, where: str) -> None:
    """Refuse modules holding parameters the rule would not slice (per-head sinks, bias tables...)."""
    for pname, p in module.named_parameters():
        if pname in allowed:
            continue
        owner = pname.rsplit(".", 1)[0]
        if owner in ("q_norm", "k_norm") and p.numel() == head_dim:  # per-head-dim norms shared by all heads
            continue
        raise UnsupportedAttentionError(
            f"{who}: {type(module).__name__} at {where!r} has parameter {pname!r} {tuple(p.shape)} that "
            f"head pruning would not slice, so its heads and inputs are kept; register a rule for this "
            f"class that slices it to prune them."
        )


def _label_outputs(ctx: Any, output: Any, hidden_labels: torch.Tensor, head_labels: torch.Tensor) -> Any:
    """Labels for ``(attn_output, attn_weights, ...)``: hidden channels on the last dim of the first
    tensor, query heads on dim 1 of 4-D attention weights; anything else is fixed."""
    if isinstance(output, torch.Tensor):
        return ctx.along(hidden_labels, output.shape, dim=-1)
    if not isinstance(output, (tuple, list)):
        return None
    labels: list[Any] = []
    for i, item in enumerate(output):
        if not isinstance(item, torch.Tensor):
            labels.append(None)
        elif i == 0:
            labels.append(ctx.along(hidden_labels, item.shape, dim=-1))
        elif item.dim() == 4 and item.shape[1] == head_labels.numel():
            labels.append(ctx.along(head_labels, item.shape, dim=1))
        else:
            labels.append(
                ctx.constant(ctx.sentinel("an attention output the head rule does not map", True), item.shape)
            )
    return tuple(labels) if isinstance(output, tuple) else labels


@dataclass(frozen=True)
class _Heads:
    n_q: int
    n_kv: int
    head_dim: int
    multi_query: bool = False  # the module declares one shared kv head (Falcon's ``multi_query``)

    @property
    def mqa(self) -> bool:
        """A declared multi-query module: each query head is its own unit, the shared kv head stays.

        Only declared ones: a grouped-query module pruned down to one kv head keeps kv-group units,
        so group ids stay the same across pruning steps.
        """
        return self.multi_query and self.n_kv == 1 and self.n_q > 1

    @property
    def unit(self) -> str:
        return "head" if self.n_q == self.n_kv or self.mqa else "kv_head"


def _tie_heads(ctx: Any, heads: _Heads, q: torch.Tensor, kvs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Union every row of a kv group (its query heads' rows, its key/value rows) into one unit.

    Returns one label per *query head* (for attention weights). With a single kv head (multi-query),
    each query head is its own unit and the key/value rows form one more unit, never removable (it is
    a group of one).
    """
    if heads.mqa:
        grid = q.reshape(heads.n_q, heads.head_dim)
        ctx.union(grid, grid[:, :1])
        kvs = list(kvs)
        for kv in kvs:
            ctx.union(kv.reshape(-1), kvs[0][:1].expand(kv.numel()))
        return grid[:, 0]
    grid = q.reshape(heads.n_kv, -1)
    anchor = grid[:, :1]
    ctx.union(grid, anchor)
    for kv in kvs:
        ctx.union(kv.reshape(heads.n_kv, heads.head_dim), anchor)
    return q.reshape(heads.n_q, heads.head_dim)[:, 0]


def _tie_bias(ctx: Any, layer_name: str, layer: nn.Module, rows: torch.Tensor, unit: str) -> None:
    if getattr(layer, "bias", None) is not None:
        ctx.union(ctx.param(layer_name, "bias", dim=0, role=ROLE_OUT, unit=unit), rows)


# DeBERTa-v2's separate relative-position projections (``share_att_key=False``): rows tied to q or k heads.
_POS_PROJ = {"pos_query_proj": "q", "pos_key_proj": "k"}
# One tensor slice: (path inside the module, dim, indices, read by a consumer (zeroed by the probe's mask)).
_Slice = tuple[str, int, list[int], bool]


def _hidden_norms(module: nn.Module, post_norm: str | None) -> list[str]:
    """Paths of the norms over the hidden width inside an attention leaf (ALBERT's post norm, SR norm)."""
    paths = [post_norm] if post_norm is not None else []
    sr = getattr(module, "sequence_reduction", None)
    if isinstance(sr, nn.Module):
        paths += [
            _join("sequence_reduction", n) for n, m in sr.named_modules() if isinstance(m, nn.LayerNorm)
        ]
    return paths


def _tie_residual(ctx: Any, call: Call, hidden: torch.Tensor) -> None:
    """A ``residual`` argument added to the output inside the module (BLOOM): the same channels."""
    res = _input_channels(ctx, call, _bind(call), "residual")
    if res is not None and res.numel() == hidden.numel():
        ctx.union(res, hidden)


def _tie_norm(ctx: Any, path: str, norm: nn.Module, channels: torch.Tensor) -> None:
    """A LayerNorm over ``channels`` inside a leaf: its affine parameters follow them; inexact."""
    for pname in ("weight", "bias"):
        if getattr(norm, pname, None) is not None:
            ctx.union(ctx.param(path, pname, dim=0, role=ROLE_OUT), channels)
    ctx.mark_inexact(channels, f"{path}: normalization statistics read every channel")


_STAGE = re.compile(r"(?:^|\.)(?:stages|block)\.(\d+)\.")


def note_stage(module: nn.Module, name: str) -> None:
    """Remember the stage index of a per-stage attention (SegFormer: ``config.hidden_sizes[stage]``).

    Called by the head rule while tracing and by ``load_pruned``'s replay (which does not trace).
    """
    config = getattr(module, "config", None)
    found = _STAGE.search(name)
    if found and isinstance(getattr(config, "hidden_sizes", None), (list, tuple)):
        module._torchpare_stage = int(found.group(1))


def _sync_stage_width(module: nn.Module, width: int) -> None:
    """Write a stage's pruned hidden width into the shared ``config.hidden_sizes``.

    A stage's residual width is one group, so it is uniform within the stage and the config can
    express it; SegFormer's classification head reshapes to ``config.hidden_sizes[-1]``.
    """
    stage = getattr(module, "_torchpare_stage", None)
    config = getattr(module, "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    if (
        isinstance(stage, int)
        and isinstance(sizes, (list, tuple))
        and stage < len(sizes)
        and sizes[stage] != width
    ):
        new = list(sizes)
        new[stage] = width
        config.hidden_sizes = type(sizes)(new)


class _HeadRule(ModuleRule):
    """Shared entry point: a layout the rule cannot handle blocks the module instead of failing the trace.

    The leaf's inputs and outputs are then fixed with the error message as the reason (shown by
    ``graph.report()``), so the rest of the model stays prunable and nothing is sliced wrongly.
    """

    def propagate(self, ctx: Any, call: Call) -> Any:
        try:
            return self.propagate_heads(ctx, call)
        except UnsupportedAttentionError as err:
            reason = str(err)
            for t in [*call.args, *call.kwargs.values()]:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    ctx.block(ctx.label(t), reason)
            outputs = call.output if isinstance(call.output, (tuple, list)) else (call.output,)
            labels = [
                ctx.constant(ctx.sentinel(reason), o.shape) if isinstance(o, torch.Tensor) else None
                for o in outputs
            ]
            return tuple(labels) if isinstance(call.output, (tuple, list)) else labels[0]

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        raise NotImplementedError
