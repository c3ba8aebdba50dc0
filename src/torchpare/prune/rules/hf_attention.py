"""Head-granular pruning rules for Hugging Face attention modules (transformers 5.x).

An attention module becomes one trace leaf owning its projections. Its unit is a whole head: the
query, key and value rows of head ``h`` and the output-projection columns reading it are one unit, so
``head_dim`` is never cut (rotary embeddings pair dims inside a head; the forward reshapes to
``(..., -1, head_dim)``). With grouped-query attention (``n_kv < n_q``) the unit is a *kv head*: its
key/value rows, the rows of the ``n_q / n_kv`` query heads that read it and their output columns.

Three rules cover the layouts (transformers 5.x):

* :class:`ProjAttentionRule`: separate query/key/value ``nn.Linear`` plus an output Linear inside the
  module (``o_proj`` in LLaMA, Mistral, Qwen, Gemma, SegFormer...; ``out_proj`` in OPT, BART, Whisper...;
  ``dense`` in Phi and ALBERT; ``o`` in T5; ``out_lin`` in DistilBERT) or outside it (BERT's, ViT's and
  Swin's ``query``/``key``/``value``, DeBERTa's ``query_proj``...). ``q_norm``/``k_norm`` over
  ``head_dim`` are kept whole; per-head ``sinks`` (gpt-oss), Swin's relative position bias table and
  T5's relative attention bias are sliced with their heads.
* :class:`InterleavedQKVRule`: one fused Linear laid out per kv group as ``[q_1..q_g | k | v]`` plus an
  output Linear (GPT-NeoX, BLOOM, Falcon ``query_key_value`` / ``dense``).
* :class:`GPT2AttentionRule`: fused ``c_attn`` (``Conv1D``, q|k|v thirds) + ``c_proj``.

The surgery updates the *module* attributes the forwards read (``num_heads``, ``num_attention_heads``,
``num_key_value_heads``, ``num_kv_heads``, ``all_head_size``, ``split_size``, the hidden width in
``embed_dim``/``hidden_size``/``dim``/``d_model``, Linear/Conv1D sizes); the shared ``config`` keeps the
unpruned head counts (layers may differ after pruning).

Transformers classes are registered lazily by :func:`register_transformers_rules`, a trace hook that
matches the first instance of each class by *structure* (:func:`rule_for_module`): importing every
modeling module up front would cost seconds for users who never prune a transformer. Structure is a
hint; that the forward follows head pruning is checked on the module's real inputs by running it
(:func:`_probe_heads`), never by reading its code, so decorated forwards work and a forward that reads
a stale size blocks its heads with the reason instead of breaking the pruned model.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchpare.prune.graph.propagation import varying_dims
from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.registry import MODULE_RULES, register_rule, register_trace_hook

__all__ = [
    "ProjAttentionRule",
    "GPT2AttentionRule",
    "InterleavedQKVRule",
    "register_transformers_rules",
    "rule_for_module",
    "UnsupportedAttentionError",
]

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
        if lab is not None and varying_dims(lab) == [1]:
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


def _note_stage(module: nn.Module, name: str) -> None:
    """Remember the stage index of a per-stage attention (SegFormer: ``config.hidden_sizes[stage]``)."""
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


# -- the behavioural probe ----------------------------------------------------------------------------
# Verdicts per (class, rule, inputs given): None = removing a head is exact, else the reason it is not.
_PROBED: dict[tuple[Any, ...], str | None] = {}
_NO_CACHE_ARGS = ("past_key_value", "past_key_values", "layer_past", "cache")


def _probe_inputs(call: Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with caches dropped (running the module again must not extend them)."""

    def clean(name: str, v: Any) -> Any:
        if name in _NO_CACHE_ARGS or "Cache" in type(v).__name__:
            return None
        return v

    args = tuple(clean("", a) for a in call.args)
    kwargs = {k: clean(k, v) for k, v in call.kwargs.items()}
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return args, kwargs


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _probe_heads(ctx: Any, rule: Any, call: Call, heads: _Heads, per_q_head: torch.Tensor) -> None:
    """Check by running the module that removing one head equals zeroing it; block the heads if not.

    The layout was chosen from the module's structure (its Linears and head size), a hint: whether the
    forward really follows head pruning (reads head counts from the attributes the rule refreshes, not
    from the config or a hard-coded width) is checked here on the module's real inputs, once per class.
    Two copies run: one with kv group 0 removed and the rule's ``update`` applied, one with its output
    columns zeroed. A failure or a difference blocks the heads with the reason (``graph.report()``,
    and the warning of ``DependencyGraph.build``); the hidden width stays prunable.
    """
    if heads.n_kv < 2 and not heads.mqa:
        return
    module = call.module
    given = tuple(sorted(k for k, v in call.kwargs.items() if isinstance(v, torch.Tensor)))
    key = (type(module), id(rule), given, heads.n_q // heads.n_kv, len(call.args))
    if key not in _PROBED:
        _PROBED[key] = _run_probe(rule, call, heads)
    reason = _PROBED[key]
    if reason is not None:
        ctx.block(per_q_head, f"{type(module).__name__} at {call.module_name!r}: {reason}")


def _drop_heads(t: Any, heads: _Heads, gone: list[int]) -> Any:
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 4 and t.shape[1] == heads.n_q:
        keep = torch.tensor([h for h in range(heads.n_q) if h not in gone], dtype=torch.long, device=t.device)
        return t.index_select(1, keep)
    return t


def _run_probe(rule: Any, call: Call, heads: _Heads) -> str | None:
    import copy

    from torchpare.prune.rules.base import slice_tensor_attr

    slices, out_cols = rule.unit_slices(call.module, heads, 0)
    try:
        masked, pruned = copy.deepcopy(call.module), copy.deepcopy(call.module)
    except Exception as err:  # noqa: BLE001 - an uncopyable module cannot be checked: say so
        return f"its heads could not be checked (deepcopy failed: {type(err).__name__}: {err})"
    args, kwargs = _probe_inputs(call)
    # A per-head input tied to these heads (T5's position_bias from the first layer) loses them too.
    heads_gone = [i for path, dim, idx, _ in slices if path == "__heads__" for i in idx]
    slices = [s for s in slices if s[0] != "__heads__"]
    p_args = tuple(_drop_heads(a, heads, heads_gone) for a in args)
    p_kwargs = {k: _drop_heads(v, heads, heads_gone) for k, v in kwargs.items()}
    try:
        with torch.no_grad():
            for path, dim, idx, consumer in slices:
                t = masked.get_parameter(path)
                if consumer:
                    t.index_fill_(dim, torch.tensor(idx, device=t.device), 0)
                keep = sorted(set(range(t.shape[dim])) - set(idx))
                slice_tensor_attr(pruned, path, dim, torch.tensor(keep, dtype=torch.long, device=t.device))
            rule.update(pruned)
            ref = _first_tensor(masked(*args, **kwargs))
            got = _first_tensor(pruned(*p_args, **p_kwargs))
    except Exception as err:  # noqa: BLE001 - any failure of the pruned forward is the verdict
        return (
            f"its forward fails after one head is removed ({type(err).__name__}: {str(err)[:200]}); it reads "
            f"a head count or width the rule does not update, so its heads are kept"
        )
    if ref is None or got is None:
        return "its forward returns no tensor to compare, so its heads are kept"
    if out_cols:
        keep = sorted(set(range(ref.shape[-1])) - set(out_cols))
        ref = ref[..., keep]
    if ref.shape != got.shape:
        return (
            f"after one head is removed its output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}, "
            f"so its heads are kept"
        )
    scale = float(ref.detach().abs().max()) if ref.numel() else 0.0
    diff = float((ref.double() - got.double()).abs().max()) if ref.numel() else 0.0
    if diff > 1e-4 * max(scale, 1.0):
        return (
            f"removing one head changes its other heads' output by {diff:.3g} (its forward does not "
            f"follow head pruning), so its heads are kept"
        )
    return None


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

    Covers ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (LLaMA, ViT, Mistral, Qwen, Gemma, SegFormer...),
    ``out_proj`` (OPT, BART, CLIP, Whisper...), ``dense`` (Phi; ALBERT, whose module also adds the
    residual and applies ``LayerNorm``), ``q``/``k``/``v``/``o`` (T5, with its relative attention bias),
    ``q_lin``.../``out_lin`` (DistilBERT), ``query_proj``/``key_proj``/``value_proj`` (DeBERTa-v2, whose
    shared relative embeddings go through the same projections) and BERT's ``query``/``key``/``value``
    whose output Linear lives in a sibling module (``o=None``: the leaf's output is the concatenated
    heads, in value-row order, read by the generic Linear rule).

    Only whole kv groups are removed, so ``num_key_value_groups`` (read by ``repeat_kv``) is unchanged.
    Cross-attention keys/values read ``key_value_states`` / ``encoder_hidden_states`` when given. A
    ``sequence_reduction`` submodule (SegFormer/PVT: strided conv + LayerNorm on the key/value input)
    keeps the hidden width, so its channels are the hidden channels.

    Args:
        q, k, v: attribute names of the query, key and value ``nn.Linear``.
        o: attribute name of the output ``nn.Linear``, or ``None`` when it is outside the module.
        head_dim_attr: attribute holding the per-head size (never changed by pruning).
        post_norm: attribute name of a norm the module applies to ``hidden_states + o(...)`` (ALBERT).
    """

    def __init__(
        self,
        q: str = "q_proj",
        k: str = "k_proj",
        v: str = "v_proj",
        o: str | None = "o_proj",
        head_dim_attr: str = "head_dim",
        post_norm: str | None = None,
    ) -> None:
        self.q, self.k, self.v, self.o = q, k, v, o
        self.head_dim_attr = head_dim_attr
        self.post_norm = post_norm

    @property
    def projections(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v) if self.o is None else (self.q, self.k, self.v, self.o)

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` has this layout's Linears and head size (a structural hint, not a proof)."""
        hd = getattr(module, self.head_dim_attr, None)
        ok = all(isinstance(getattr(module, p, None), nn.Linear) for p in self.projections)
        if self.post_norm is not None:
            ok = ok and isinstance(getattr(module, self.post_norm, None), nn.LayerNorm)
        return ok and isinstance(hd, int) and hd > 0

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
        allowed |= {f"{p}.{t}" for p in _POS_PROJ for t in ("weight", "bias")}
        allowed |= {f"{p}.{t}" for p in _hidden_norms(module, self.post_norm) for t in ("weight", "bias")}
        if self._reduction(module) is not None:
            allowed |= {f"sequence_reduction.{n}" for n, _ in module.sequence_reduction.named_parameters()}
        _check_params(module, allowed, hd, who, where)
        return _Heads(n_q, n_kv, hd)

    @staticmethod
    def _reduction(module: nn.Module) -> tuple[str, str] | None:
        """``(conv, norm)`` paths of a SegFormer-style ``sequence_reduction`` (hidden -> hidden)."""
        sr = getattr(module, "sequence_reduction", None)
        if not isinstance(sr, nn.Module):
            return None
        conv = next((n for n, m in sr.named_modules() if isinstance(m, nn.Conv2d)), None)
        norm = next((n for n, m in sr.named_modules() if isinstance(m, nn.LayerNorm)), None)
        if conv is None:
            return None
        return _join("sequence_reduction", conv), _join("sequence_reduction", norm) if norm else ""

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        heads = self.heads(module, name)
        unit = heads.unit
        args = _bind(call)
        x_in = _hidden_channels(ctx, call, args)
        kv_in = next(
            (c for c in (_input_channels(ctx, call, args, n) for n in _KV_SOURCE_ARGS) if c is not None), x_in
        )
        rel = _input_channels(ctx, call, args, "rel_embeddings")  # DeBERTa: read by q/k projections too
        if rel is not None:
            ctx.union(rel, x_in)
        _note_stage(module, name)
        reduction = self._reduction(module)
        if reduction is not None:  # hidden -> strided conv -> norm -> keys/values: the same channels
            conv, norm = reduction
            ctx.union(ctx.param(_join(name, conv), "weight", dim=1, role=ROLE_IN), x_in)
            ctx.union(ctx.param(_join(name, conv), "weight", dim=0, role=ROLE_OUT), x_in)
            _tie_bias(ctx, _join(name, conv), module.get_submodule(conv), x_in, "channel")
            if norm:
                _tie_norm(ctx, _join(name, norm), module.get_submodule(norm), x_in)
        rows = {}
        for proj, source in ((self.q, x_in), (self.k, kv_in), (self.v, kv_in)):
            pname = _join(name, proj)
            ctx.union(ctx.param(pname, "weight", dim=1, role=ROLE_IN), source)
            rows[proj] = ctx.param(pname, "weight", dim=0, role=ROLE_OUT, unit=unit)
            _tie_bias(ctx, pname, getattr(module, proj), rows[proj], unit)
        for proj, tied in _POS_PROJ.items():  # DeBERTa's separate relative-position projections
            layer = getattr(module, proj, None)
            if isinstance(layer, nn.Linear):
                pname = _join(name, proj)
                ctx.union(ctx.param(pname, "weight", dim=1, role=ROLE_IN), x_in)
                pos_rows = ctx.param(pname, "weight", dim=0, role=ROLE_OUT, unit=unit)
                ctx.union(pos_rows, rows[self.q if tied == "q" else self.k])
                _tie_bias(ctx, pname, layer, pos_rows, unit)
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
            _probe_heads(ctx, self, call, heads, per_q_head)
            return _label_outputs(ctx, call.output, rows[self.v], per_q_head)
        o_name = _join(name, self.o)
        ctx.union(ctx.param(o_name, "weight", dim=1, role=ROLE_IN, unit=unit), rows[self.q])
        hidden = ctx.param(o_name, "weight", dim=0, role=ROLE_OUT)
        _tie_bias(ctx, o_name, getattr(module, self.o), hidden, "channel")
        _tie_residual(ctx, call, hidden)
        if self.post_norm is not None:  # ALBERT: LayerNorm(hidden_states + dense(heads))
            ctx.union(hidden, x_in)
            _tie_norm(ctx, _join(name, self.post_norm), getattr(module, self.post_norm), x_in)
        _probe_heads(ctx, self, call, heads, per_q_head)
        return _label_outputs(ctx, call.output, hidden, per_q_head)

    def unit_slices(self, module: nn.Module, heads: _Heads, unit: int) -> tuple[list[_Slice], list[int]]:
        """Tensor slices of kv group ``unit`` (for the probe), and the output columns it owns (``o=None``)."""
        hd, g = heads.head_dim, heads.n_q // heads.n_kv
        if heads.mqa:  # query head `unit` alone: the shared key/value rows stay
            g, kv_rows = 1, []
        else:
            kv_rows = list(range(unit * hd, (unit + 1) * hd))
        q_rows = list(range(unit * g * hd, (unit + 1) * g * hd))
        out: list[_Slice] = []
        for proj, idx in ((self.q, q_rows), (self.k, kv_rows), (self.v, kv_rows)):
            if not idx:
                continue
            out.append((f"{proj}.weight", 0, idx, False))
            if getattr(module, proj).bias is not None:
                out.append((f"{proj}.bias", 0, idx, False))
        for proj, tied in _POS_PROJ.items():
            layer = getattr(module, proj, None)
            if isinstance(layer, nn.Linear) and (q_rows if tied == "q" else kv_rows):
                idx = q_rows if tied == "q" else kv_rows
                out.append((f"{proj}.weight", 0, idx, False))
                if layer.bias is not None:
                    out.append((f"{proj}.bias", 0, idx, False))
        heads_idx = list(range(unit * g, (unit + 1) * g))
        out.append(("__heads__", 1, heads_idx, False))
        for path, dim in _PER_HEAD_PARAMS.items():
            if _per_head_param(module, path, heads.n_q) is not None:
                out.append((path, dim, heads_idx, False))
        if self.o is not None:
            out.append((f"{self.o}.weight", 1, q_rows, True))
            return out, []
        return out, kv_rows

    def update(self, module: nn.Module) -> None:
        for proj in self.projections:
            _refresh_linear(getattr(module, proj))
        for proj in _POS_PROJ:
            if isinstance(getattr(module, proj, None), nn.Linear):
                _refresh_linear(getattr(module, proj))
        hd = getattr(module, self.head_dim_attr)
        q = getattr(module, self.q)
        n_q, n_kv = q.out_features // hd, getattr(module, self.k).out_features // hd
        _set_if_present(module, _Q_HEAD_ATTRS, n_q)
        _set_if_present(module, _KV_HEAD_ATTRS, n_kv)
        _set_if_present(module, ("num_key_value_groups",), n_q // max(n_kv, 1))
        _set_if_present(module, ("all_head_size", "inner_dim"), n_q * hd)
        _set_if_present(module, _HIDDEN_ATTRS, q.in_features)
        _sync_stage_width(module, q.in_features)
        reduction = self._reduction(module)
        if reduction is not None:
            conv = module.get_submodule(reduction[0])
            conv.out_channels, conv.in_channels = int(conv.weight.shape[0]), int(conv.weight.shape[1])
        for path in _hidden_norms(module, self.post_norm):
            norm = module.get_submodule(path)
            if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
                norm.normalized_shape = tuple(norm.weight.shape)


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
        _probe_heads(ctx, self, call, heads, per_head)
        return _label_outputs(ctx, call.output, hidden, per_head)

    def matches(self, module: nn.Module) -> bool:
        return (
            all(hasattr(getattr(module, n, None), "weight") for n in ("c_attn", "c_proj"))
            and isinstance(getattr(module, "head_dim", None), int)
            and isinstance(getattr(module, "split_size", None), int)
        )

    def unit_slices(self, module: nn.Module, heads: _Heads, unit: int) -> tuple[list[_Slice], list[int]]:
        hd, inner = heads.head_dim, heads.n_q * heads.head_dim
        cols = [t * inner + unit * hd + i for t in range(3) for i in range(hd)]
        out: list[_Slice] = [("c_attn.weight", 1, cols, False)]
        if module.c_attn.bias is not None:
            out.append(("c_attn.bias", 0, cols, False))
        out.append(("c_proj.weight", 0, list(range(unit * hd, (unit + 1) * hd)), True))
        return out, []

    def update(self, module: nn.Module) -> None:
        _refresh_linear(module.c_attn)
        _refresh_linear(module.c_proj)
        inner = module.c_proj.weight.shape[0]
        module.num_heads = inner // module.head_dim
        module.split_size = inner
        module.embed_dim = int(module.c_attn.weight.shape[0])  # the hidden (residual) width read by c_attn


class InterleavedQKVRule(_HeadRule):
    """Heads of a fused projection laid out per kv group as ``[q_1 .. q_g | k | v]``.

    ``g = 1`` is the per-head ``[q_h | k_h | v_h]`` layout of GPT-NeoX ``query_key_value`` (viewed as
    ``(..., -1, 3 * head_size)``), BLOOM and Falcon-7B-style models without multi-query; Falcon's
    ``new_decoder_architecture`` groups ``g`` query heads with one key and one value head, and
    multi-query Falcon (one kv head for all) is ``[q_1 .. q_n | k | v]``. Kv group ``j`` owns fused rows
    ``j*(g+2)*d : (j+1)*(g+2)*d`` and output-projection columns ``j*g*d : (j+1)*g*d``. With a single kv
    head each query head is its own unit (its rows and output columns), the shared key/value stay.

    Args:
        qkv: attribute name of the fused ``nn.Linear``.
        o: attribute name of the output ``nn.Linear``.
        head_dim_attr: attribute holding the per-head size.
    """

    def __init__(
        self, qkv: str = "query_key_value", o: str = "dense", head_dim_attr: str = "head_size"
    ) -> None:
        self.qkv, self.o, self.head_dim_attr = qkv, o, head_dim_attr

    def matches(self, module: nn.Module) -> bool:
        hd = getattr(module, self.head_dim_attr, None)
        return (
            all(isinstance(getattr(module, n, None), nn.Linear) for n in (self.qkv, self.o))
            and isinstance(hd, int)
            and hd > 0
        )

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
        n_q, rem = divmod(out.in_features, hd)
        n_kv2, rem2 = divmod(fused.out_features - out.in_features, 2 * hd)
        if rem or rem2 or n_q == 0 or n_kv2 == 0 or n_q % n_kv2:
            raise UnsupportedAttentionError(
                f"{who}: {type(module).__name__} at {where!r}: {self.qkv} outputs {fused.out_features}, "
                f"{self.o} reads {out.in_features}; expected (heads + 2 * kv heads) * {self.head_dim_attr} "
                f"({hd}) with kv heads dividing heads."
            )
        allowed = {f"{p}.{t}" for p in (self.qkv, self.o) for t in ("weight", "bias")}
        _check_params(module, allowed, hd, who, where)
        multi_query = getattr(module, "multi_query", False) is True and not getattr(
            module, "new_decoder_architecture", False
        )
        return _Heads(n_q, n_kv2, hd, multi_query)

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        heads = self.heads(module, name)
        fused_name, o_name = _join(name, self.qkv), _join(name, self.o)
        ctx.union(
            ctx.param(fused_name, "weight", dim=1, role=ROLE_IN), _hidden_channels(ctx, call, _bind(call))
        )
        unit = heads.unit
        rows = ctx.param(fused_name, "weight", dim=0, role=ROLE_OUT, unit=unit)
        _tie_bias(ctx, fused_name, getattr(module, self.qkv), rows, unit)
        hd, g = heads.head_dim, heads.n_q // heads.n_kv
        grid = rows.reshape(heads.n_kv, g + 2, hd)
        q = grid[:, :g].reshape(heads.n_q * hd)
        per_q_head = _tie_heads(ctx, heads, q, (grid[:, g].reshape(-1), grid[:, g + 1].reshape(-1)))
        _guard_per_head_inputs(ctx, call, heads.n_q, per_q_head)
        cols = ctx.param(o_name, "weight", dim=1, role=ROLE_IN, unit=unit)
        ctx.union(cols, q)
        hidden = ctx.param(o_name, "weight", dim=0, role=ROLE_OUT)
        _tie_bias(ctx, o_name, getattr(module, self.o), hidden, "channel")
        _tie_residual(ctx, call, hidden)
        _probe_heads(ctx, self, call, heads, per_q_head)
        return _label_outputs(ctx, call.output, hidden, per_q_head)

    def unit_slices(self, module: nn.Module, heads: _Heads, unit: int) -> tuple[list[_Slice], list[int]]:
        hd, g = heads.head_dim, heads.n_q // heads.n_kv
        if heads.mqa:  # query head `unit` alone
            rows = list(range(unit * hd, (unit + 1) * hd))
            cols = rows
        else:
            rows = list(range(unit * (g + 2) * hd, (unit + 1) * (g + 2) * hd))
            cols = list(range(unit * g * hd, (unit + 1) * g * hd))
        out: list[_Slice] = [(f"{self.qkv}.weight", 0, rows, False)]
        if getattr(module, self.qkv).bias is not None:
            out.append((f"{self.qkv}.bias", 0, rows, False))
        out.append((f"{self.o}.weight", 1, cols, True))
        return out, []

    def update(self, module: nn.Module) -> None:
        fused, out = getattr(module, self.qkv), getattr(module, self.o)
        _refresh_linear(fused)
        _refresh_linear(out)
        hd = getattr(module, self.head_dim_attr)
        n_q = out.in_features // hd
        n_kv = (fused.out_features - out.in_features) // (2 * hd)
        _set_if_present(module, _Q_HEAD_ATTRS, n_q)
        _set_if_present(module, ("num_kv_heads", "num_key_value_heads"), n_kv)
        _set_if_present(module, ("split_size",), n_q * hd)
        _set_if_present(module, _HIDDEN_ATTRS, fused.in_features)


# -- registration ------------------------------------------------------------------------------------
_GPT2 = GPT2AttentionRule()
# Layouts tried in order on the first instance of each transformers class: the first whose structure
# (Linears, head-size attribute) matches becomes the class's rule. Structure is only a hint: each rule
# checks on the module's real inputs that its forward follows head pruning (``_probe_heads``), so a
# forward that reads a stale width after a release blocks its heads, with the reason, instead of
# producing a broken model. Nothing here reads a forward's code, so decorated forwards are fine.
_LAYOUTS: tuple[Any, ...] = (
    ProjAttentionRule("q_proj", "k_proj", "v_proj", "o_proj", "head_dim"),
    ProjAttentionRule("q_proj", "k_proj", "v_proj", "out_proj", "head_dim"),
    ProjAttentionRule("q_proj", "k_proj", "v_proj", "dense", "head_dim"),
    ProjAttentionRule("q", "k", "v", "o", "key_value_proj_dim"),
    ProjAttentionRule("q_lin", "k_lin", "v_lin", "out_lin", "attention_head_size"),
    ProjAttentionRule("query", "key", "value", "dense", "attention_head_size", post_norm="LayerNorm"),
    ProjAttentionRule("query", "key", "value", None, "attention_head_size"),
    ProjAttentionRule("query_proj", "key_proj", "value_proj", None, "attention_head_size"),
    _GPT2,
    InterleavedQKVRule(),
    InterleavedQKVRule(head_dim_attr="head_dim"),
)
_examined: set[type] = set()


def rule_for_module(module: nn.Module) -> ModuleRule | None:
    """The head rule whose layout ``module``'s structure matches (``None``: none does).

    Args:
        module: an attention module instance.

    Returns:
        The first matching rule of the built-in layouts, or ``None``.

    Example:
        >>> from torch import nn
        >>> rule_for_module(nn.Linear(2, 2)) is None
        True
    """
    for rule in _LAYOUTS:
        if rule.matches(module):
            return rule
    return None


def register_transformers_rules(model: nn.Module) -> list[type]:
    """Register head rules for the transformers attention classes used in ``model`` (idempotent, cheap).

    Tracing does this by itself (a trace hook). For each transformers class not seen before, its
    first instance in ``model`` is matched against the known layouts by structure; classes that
    already have a rule keep it; each class is examined once.

    Args:
        model: a model.

    Returns:
        The classes newly registered.

    Example:
        >>> from torch import nn
        >>> register_transformers_rules(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    new = []
    for module in model.modules():
        cls = type(module)
        if cls in _examined:
            continue
        _examined.add(cls)
        if cls in MODULE_RULES or not cls.__module__.startswith("transformers."):
            continue
        rule = rule_for_module(module)
        if rule is not None:
            register_rule(cls, rule)
            new.append(cls)
    return new


register_trace_hook(register_transformers_rules)
