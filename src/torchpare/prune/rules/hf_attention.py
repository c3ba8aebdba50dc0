"""Head-granular pruning rules for Hugging Face attention modules (transformers 5.x).

An attention module becomes one trace leaf owning its projections. Its unit is a whole head: the
query, key and value rows of head ``h`` and the output-projection columns reading it are one unit, so
``head_dim`` is never cut (rotary embeddings pair dims inside a head; the forward reshapes to
``(..., -1, head_dim)``). With grouped-query attention (``n_kv < n_q``) the unit is a *kv head*: its
key/value rows, the rows of the ``n_q / n_kv`` query heads that read it and their output columns.

Three rules cover the layouts whose forwards (transformers 5.23) reshape with ``-1`` heads:

* :class:`ProjAttentionRule`: separate query/key/value ``nn.Linear`` plus an output Linear inside the
  module (``o_proj`` in LLaMA, ViT, Mistral, Qwen, Gemma...; ``out_proj`` in OPT, BART, CLIP,
  Whisper...; ``dense`` in Phi; ``q_lin``...``out_lin`` in DistilBERT) or outside it (BERT's
  ``query``/``key``/``value``, whose ``BertSelfOutput.dense`` the generic Linear rule handles).
  ``q_norm``/``k_norm`` over ``head_dim`` are kept whole; per-head ``sinks`` (gpt-oss) and Swin's relative position bias table are sliced.
* :class:`InterleavedQKVRule`: one fused Linear laid out per head as ``[q_h | k_h | v_h]`` plus an
  output Linear (GPT-NeoX ``query_key_value`` / ``dense``).
* :class:`GPT2AttentionRule`: fused ``c_attn`` (``Conv1D``, q|k|v thirds) + ``c_proj``; ``split_size``
  and ``num_heads`` are refreshed.

The surgery updates the *module* attributes the forwards read (``num_heads``, ``num_attention_heads``,
``num_key_value_heads``, ``all_head_size``, ``split_size``, Linear/Conv1D sizes) and never the shared
``config``: after pruning, layers have different head counts, which one config cannot express.

Transformers classes are registered lazily by :func:`register_transformers_rules`, a trace hook that
looks at the classes of the model being traced: importing every modeling module up front would cost
seconds for users who never prune a transformer.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.registry import MODULE_RULES, register_class_hook, register_rule

__all__ = [
    "ProjAttentionRule",
    "GPT2AttentionRule",
    "InterleavedQKVRule",
    "register_transformers_rules",
    "UnsupportedAttentionError",
]

# Module attributes holding head counts that forwards (or attention kernels) read; refreshed after surgery.
_Q_HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads")
_KV_HEAD_ATTRS = ("num_key_value_heads", "num_kv_heads")
# Keyword names under which cross-attention modules receive the encoder states that feed keys/values.
_KV_SOURCE_ARGS = ("key_value_states", "encoder_hidden_states")


# Parameters holding one slice per query head, sliced with their heads: path -> head dim.
# gpt-oss attention sinks (n_heads,); Swin's relative position bias table (positions, n_heads).
_PER_HEAD_PARAMS = {"sinks": 0, "relative_position_bias.relative_position_bias_table": 1}


def _per_head_param(module: nn.Module, path: str, n_q: int) -> torch.Tensor | None:
    try:
        p = module.get_parameter(path)
    except AttributeError:
        return None
    dim = _PER_HEAD_PARAMS[path]
    return p if p.dim() == dim + 1 and p.shape[dim] == n_q else None


class UnsupportedAttentionError(ValueError):
    """An attention module matched by class has a layout this rule cannot prune by heads."""


def _join(prefix: str, name: str) -> str:
    return ".".join(part for part in (prefix, name) if part)


def _bind(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (attention forwards take most of them as keywords)."""
    try:
        bound = inspect.signature(call.module.forward).bind_partial(*call.args, **call.kwargs)
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


def _guard_per_head_inputs(ctx: Any, call: Call, n_q: int, per_q_head: torch.Tensor) -> None:
    """Block the heads when another input carries one slice per head (a position bias shared across
    layers, an ALiBi tensor): the rule does not slice it, so removing a head would break its shape."""
    if n_q < 2:
        return
    for t in [*call.args, *call.kwargs.values()]:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 4 and t.shape[1] == n_q:
            reason = (
                f"{type(call.module).__name__} at {call.module_name!r} receives a per-head input of shape "
                f"{tuple(t.shape)} that head pruning does not slice"
            )
            ctx.block(per_q_head, reason)
            ctx.block(ctx.label(t), reason)


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

    @property
    def unit(self) -> str:
        return "head" if self.n_q == self.n_kv else "kv_head"


def _tie_heads(ctx: Any, heads: _Heads, q: torch.Tensor, kvs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Union every row of a kv group (its query heads' rows, its key/value rows) into one unit.

    Returns one label per *query head* (for attention weights).
    """
    grid = q.reshape(heads.n_kv, -1)
    anchor = grid[:, :1]
    ctx.union(grid, anchor)
    for kv in kvs:
        ctx.union(kv.reshape(heads.n_kv, heads.head_dim), anchor)
    return q.reshape(heads.n_q, heads.head_dim)[:, 0]


def _tie_bias(ctx: Any, layer_name: str, layer: nn.Module, rows: torch.Tensor, unit: str) -> None:
    if getattr(layer, "bias", None) is not None:
        ctx.union(ctx.param(layer_name, "bias", dim=0, role=ROLE_OUT, unit=unit), rows)


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


class ProjAttentionRule(_HeadRule):
    """Heads of attention with separate query/key/value Linears and an optional output Linear.

    Covers ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (LLaMA, ViT, Mistral, Qwen, Gemma...),
    ``out_proj`` (OPT, BART, CLIP, Whisper...), ``dense`` (Phi), ``q_lin``.../``out_lin`` (DistilBERT) and
    BERT's ``query``/``key``/``value`` whose output Linear lives in a sibling module (``o=None``: the
    leaf's output is the concatenated heads, in value-row order, read by the generic Linear rule).

    Only whole kv groups are removed, so ``num_key_value_groups`` (read by ``repeat_kv``) is unchanged.
    Cross-attention keys/values read ``key_value_states`` / ``encoder_hidden_states`` when given.

    Args:
        q, k, v: attribute names of the query, key and value ``nn.Linear``.
        o: attribute name of the output ``nn.Linear``, or ``None`` when it is outside the module.
        head_dim_attr: attribute holding the per-head size (never changed by pruning).
    """

    def __init__(
        self,
        q: str = "q_proj",
        k: str = "k_proj",
        v: str = "v_proj",
        o: str | None = "o_proj",
        head_dim_attr: str = "head_dim",
    ) -> None:
        self.q, self.k, self.v, self.o = q, k, v, o
        self.head_dim_attr = head_dim_attr

    @property
    def projections(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v) if self.o is None else (self.q, self.k, self.v, self.o)

    def heads(self, module: nn.Module, where: str) -> _Heads:
        who = type(self).__name__
        hd = getattr(module, self.head_dim_attr, None)
        layers = [getattr(module, p, None) for p in self.projections]
        if not all(isinstance(x, nn.Linear) for x in layers) or not isinstance(hd, int) or hd < 1:
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r} needs nn.Linear {'/'.join(self.projections)} "
                f"and an int {self.head_dim_attr}."
            )
        q, k, v = layers[:3]
        n_q, rem_q = divmod(q.out_features, hd)
        n_kv, rem_kv = divmod(k.out_features, hd)
        o_in = layers[3].in_features if self.o is not None else q.out_features
        if (
            rem_q
            or rem_kv
            or n_kv == 0
            or n_q % n_kv
            or v.out_features != k.out_features
            or o_in != q.out_features
        ):
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r} has q/k/v/o sizes {q.out_features}/"
                f"{k.out_features}/{v.out_features}/{o_in} that are not whole heads of "
                f"{self.head_dim_attr}={hd} with grouped kv heads."
            )
        allowed = {f"{p}.{t}" for p in self.projections for t in ("weight", "bias")}
        allowed |= {p for p in _PER_HEAD_PARAMS if _per_head_param(module, p, n_q) is not None}
        _check_params(module, allowed, hd, who, where)
        return _Heads(n_q, n_kv, hd)

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        heads = self.heads(module, name)
        unit = heads.unit
        args = _bind(call)
        x_in = _hidden_channels(ctx, call, args)
        kv_in = next(
            (c for c in (_input_channels(ctx, call, args, n) for n in _KV_SOURCE_ARGS) if c is not None), x_in
        )
        rows = {}
        for proj, source in ((self.q, x_in), (self.k, kv_in), (self.v, kv_in)):
            pname = _join(name, proj)
            ctx.union(ctx.param(pname, "weight", dim=1, role=ROLE_IN), source)
            rows[proj] = ctx.param(pname, "weight", dim=0, role=ROLE_OUT, unit=unit)
            _tie_bias(ctx, pname, getattr(module, proj), rows[proj], unit)
        per_q_head = _tie_heads(ctx, heads, rows[self.q], (rows[self.k], rows[self.v]))
        _guard_per_head_inputs(ctx, call, heads.n_q, per_q_head)
        for path, dim in _PER_HEAD_PARAMS.items():
            if _per_head_param(module, path, heads.n_q) is not None:
                owner, _, pname = path.rpartition(".")
                ctx.union(ctx.param(_join(name, owner), pname, dim=dim, role=ROLE_OUT, unit=unit), per_q_head)
        if self.o is None:
            if heads.n_q != heads.n_kv:  # the consumer outside would read repeated value heads
                raise UnsupportedAttentionError(
                    f"{type(self).__name__}: {type(module).__name__} at {name!r} has grouped kv heads but no "
                    f"output projection inside the module."
                )
            return _label_outputs(ctx, call.output, rows[self.v], per_q_head)
        o_name = _join(name, self.o)
        ctx.union(ctx.param(o_name, "weight", dim=1, role=ROLE_IN, unit=unit), rows[self.q])
        hidden = ctx.param(o_name, "weight", dim=0, role=ROLE_OUT)
        _tie_bias(ctx, o_name, getattr(module, self.o), hidden, "channel")
        return _label_outputs(ctx, call.output, hidden, per_q_head)

    def update(self, module: nn.Module) -> None:
        for proj in self.projections:
            _refresh_linear(getattr(module, proj))
        hd = getattr(module, self.head_dim_attr)
        n_q, n_kv = getattr(module, self.q).out_features // hd, getattr(module, self.k).out_features // hd
        _set_if_present(module, _Q_HEAD_ATTRS, n_q)
        _set_if_present(module, _KV_HEAD_ATTRS, n_kv)
        _set_if_present(module, ("num_key_value_groups",), n_q // max(n_kv, 1))
        _set_if_present(module, ("all_head_size", "inner_dim"), n_q * hd)


class GPT2AttentionRule(_HeadRule):
    """Heads of GPT-2 attention: fused ``c_attn`` (``Conv1D``, output columns ``[q | k | v]``) and ``c_proj``.

    ``Conv1D`` weights are ``(in, out)``: head ``h`` owns ``c_attn.weight[:, t*E + h*d : t*E + (h+1)*d]``
    for ``t`` in q, k, v and ``c_proj.weight[h*d : (h+1)*d, :]``. The forward splits ``c_attn``'s output
    with ``self.split_size``, which the surgery sets to the new ``num_heads * head_dim``.
    """

    def heads(self, module: nn.Module, where: str) -> _Heads:
        who = type(self).__name__
        if getattr(module, "is_cross_attention", False):
            raise UnsupportedAttentionError(
                f"{who}: cross-attention {type(module).__name__} at {where!r} (separate q_attn) is not "
                f"supported; its heads and inputs are kept."
            )
        hd = getattr(module, "head_dim", None)
        c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
        if not isinstance(hd, int) or c_attn is None or c_proj is None:
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r} needs c_attn, c_proj and an int head_dim."
            )
        _, fused = _linear_like_sizes(c_attn)
        inner, _ = _linear_like_sizes(c_proj)
        n, rem = divmod(inner, hd)
        if rem or fused != 3 * inner or n == 0:
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r}: c_attn outputs {fused}, c_proj reads {inner}; "
                f"expected 3 * num_heads * head_dim and num_heads * head_dim with head_dim={hd}."
            )
        allowed = {f"{p}.{t}" for p in ("c_attn", "c_proj") for t in ("weight", "bias")}
        _check_params(module, allowed, hd, who, where)
        return _Heads(n, n, hd)

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        heads = self.heads(module, name)
        args = _bind(call)
        attn = _join(name, "c_attn")
        ctx.union(ctx.param(attn, "weight", dim=0, role=ROLE_IN), _hidden_channels(ctx, call, args))
        fused = ctx.param(attn, "weight", dim=1, role=ROLE_OUT, unit="head")
        if module.c_attn.bias is not None:
            ctx.union(ctx.param(attn, "bias", dim=0, role=ROLE_OUT, unit="head"), fused)
        q, k, v = fused.reshape(3, -1)
        per_head = _tie_heads(ctx, heads, q, (k, v))
        _guard_per_head_inputs(ctx, call, heads.n_q, per_head)
        proj = _join(name, "c_proj")
        ctx.union(ctx.param(proj, "weight", dim=0, role=ROLE_IN, unit="head"), q)
        hidden = ctx.param(proj, "weight", dim=1, role=ROLE_OUT)
        if module.c_proj.bias is not None:
            ctx.union(ctx.param(proj, "bias", dim=0, role=ROLE_OUT), hidden)
        return _label_outputs(ctx, call.output, hidden, per_head)

    def update(self, module: nn.Module) -> None:
        _refresh_linear(module.c_attn)
        _refresh_linear(module.c_proj)
        inner = module.c_proj.weight.shape[0]
        module.num_heads = inner // module.head_dim
        module.split_size = inner
        module.embed_dim = int(module.c_attn.weight.shape[0])  # the hidden (residual) width read by c_attn


class InterleavedQKVRule(_HeadRule):
    """Heads of a fused projection laid out per head as ``[q_h | k_h | v_h]`` (GPT-NeoX ``query_key_value``).

    The forward views the fused output as ``(..., -1, 3 * head_size)`` and chunks it, so head ``h``
    owns fused rows ``h*3d : (h+1)*3d`` and output-projection columns ``h*d : (h+1)*d``.

    Args:
        qkv: attribute name of the fused ``nn.Linear``.
        o: attribute name of the output ``nn.Linear``.
        head_dim_attr: attribute holding the per-head size.
    """

    def __init__(
        self, qkv: str = "query_key_value", o: str = "dense", head_dim_attr: str = "head_size"
    ) -> None:
        self.qkv, self.o, self.head_dim_attr = qkv, o, head_dim_attr

    def heads(self, module: nn.Module, where: str) -> _Heads:
        who = type(self).__name__
        hd = getattr(module, self.head_dim_attr, None)
        fused, out = getattr(module, self.qkv, None), getattr(module, self.o, None)
        if not (
            isinstance(fused, nn.Linear) and isinstance(out, nn.Linear) and isinstance(hd, int) and hd > 0
        ):
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r} needs nn.Linear {self.qkv}/{self.o} and an int "
                f"{self.head_dim_attr}."
            )
        n, rem = divmod(out.in_features, hd)
        if rem or n == 0 or fused.out_features != 3 * out.in_features:
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r}: {self.qkv} outputs {fused.out_features}, "
                f"{self.o} reads {out.in_features}; expected 3 * heads * {self.head_dim_attr} ({hd})."
            )
        allowed = {f"{p}.{t}" for p in (self.qkv, self.o) for t in ("weight", "bias")}
        _check_params(module, allowed, hd, who, where)
        return _Heads(n, n, hd)

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        heads = self.heads(module, name)
        fused_name, o_name = _join(name, self.qkv), _join(name, self.o)
        ctx.union(
            ctx.param(fused_name, "weight", dim=1, role=ROLE_IN), _hidden_channels(ctx, call, _bind(call))
        )
        rows = ctx.param(fused_name, "weight", dim=0, role=ROLE_OUT, unit="head")
        _tie_bias(ctx, fused_name, getattr(module, self.qkv), rows, "head")
        grid = rows.reshape(heads.n_q, 3 * heads.head_dim)
        ctx.union(grid, grid[:, :1])
        _guard_per_head_inputs(ctx, call, heads.n_q, grid[:, 0])
        cols = ctx.param(o_name, "weight", dim=1, role=ROLE_IN, unit="head")
        ctx.union(cols.reshape(heads.n_q, heads.head_dim), grid[:, :1])
        hidden = ctx.param(o_name, "weight", dim=0, role=ROLE_OUT)
        _tie_bias(ctx, o_name, getattr(module, self.o), hidden, "channel")
        return _label_outputs(ctx, call.output, hidden, grid[:, 0])

    def update(self, module: nn.Module) -> None:
        _refresh_linear(getattr(module, self.qkv))
        _refresh_linear(getattr(module, self.o))
        n = getattr(module, self.o).in_features // getattr(module, self.head_dim_attr)
        _set_if_present(module, _Q_HEAD_ATTRS, n)


# -- registration ------------------------------------------------------------------------------------
_GPT2 = GPT2AttentionRule()
# Layouts tried in order on transformers classes: (rule, attributes its forward must read on self).
_LAYOUTS: tuple[tuple[ModuleRule, set[str]], ...] = tuple(
    (ProjAttentionRule(q, k, v, o, hd), {x for x in (q, k, v, o, hd) if x is not None})
    for q, k, v, o, hd in (
        ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim"),
        ("q_proj", "k_proj", "v_proj", "out_proj", "head_dim"),
        ("q_proj", "k_proj", "v_proj", "dense", "head_dim"),
        ("q_lin", "k_lin", "v_lin", "out_lin", "attention_head_size"),
        ("query", "key", "value", None, "attention_head_size"),
    )
) + ((InterleavedQKVRule(), {"query_key_value", "dense", "head_size"}),)
# Sizes whose meaning after head pruning is ambiguous (hidden width or heads * head_dim?): a forward
# reading them on self, or reading any head count from the shared config, is left to generic tracing.
_AMBIGUOUS_SELF = {"embed_dim", "hidden_size", "dim"}
_CONFIG_SIZES = {
    "num_heads",
    "num_attention_heads",
    "num_key_value_heads",
    "n_heads",
    "hidden_size",
    "head_dim",
}
_examined: set[type] = set()


def _attribute_reads(func: Any) -> tuple[set[str], set[str]]:
    """Attributes ``func`` reads as ``self.<x>`` and as ``self.config.<x>`` (from its bytecode)."""
    on_self: set[str] = set()
    on_config: set[str] = set()
    prev: Any = None
    prev_prev: Any = None
    for ins in dis.get_instructions(func):
        if ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            if prev is not None and prev.opname == "LOAD_FAST" and prev.argval == "self":
                on_self.add(ins.argval)
            elif (
                prev is not None
                and prev.opname == "LOAD_ATTR"
                and prev.argval == "config"
                and prev_prev is not None
                and prev_prev.argval == "self"
            ):
                on_config.add(ins.argval)
        prev_prev, prev = prev, ins
    return on_self, on_config


def _rule_for_class(cls: type) -> ModuleRule | None:
    """The rule for a transformers attention class, chosen from the attributes its forward reads."""
    if f"{cls.__module__}.{cls.__qualname__}" == "transformers.models.gpt2.modeling_gpt2.GPT2Attention":
        return _GPT2
    forward = getattr(cls, "forward", None)  # the forward instances run, possibly inherited
    if (
        forward is nn.Module.forward
        or getattr(forward, "__code__", None) is None
        or "Attention" not in cls.__name__
    ):
        return None
    # Decorators (functools.wraps: transformers 5.24's deprecate_kwarg) hide the real body's bytecode.
    on_self, on_config = _attribute_reads(inspect.unwrap(forward))
    if on_config & _CONFIG_SIZES or on_self & _AMBIGUOUS_SELF:
        return None
    for rule, needed in _LAYOUTS:
        if needed <= on_self:
            return rule
    return None


def register_transformers_rules(model: nn.Module) -> list[type]:
    """Register head rules for the transformers attention classes used in ``model`` (idempotent, cheap).

    Tracing does this by itself: a class hook offers each class the first time a traced model
    contains it, so models whose modeling module was imported after torchpare are covered. Classes
    that already have a rule keep it; each class is examined once.

    Args:
        model: a model.

    Returns:
        The classes newly registered.

    Example:
        >>> from torch import nn
        >>> register_transformers_rules(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    return [cls for cls in {type(m) for m in model.modules()} if _register_class(cls)]


def _register_class(cls: type) -> bool:
    if cls in _examined or cls in MODULE_RULES:
        return False
    _examined.add(cls)
    if not cls.__module__.startswith("transformers."):
        return False
    rule = _rule_for_class(cls)
    if rule is None:
        return False
    register_rule(cls, rule)
    return True


register_class_hook(_register_class)
