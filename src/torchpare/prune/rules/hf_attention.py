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
* :class:`~torchpare.prune.rules.hf_alibi.AlibiQKVRule`: the fused layout whose forward takes an
  ``alibi`` built once for all heads of all layers (BLOOM): pruned layers read the rows of their kept heads.

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

from typing import Any

from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.hf_alibi import AlibiQKVRule
from torchpare.prune.rules.hf_fused_attention import GPT2AttentionRule, InterleavedQKVRule
from torchpare.prune.rules.hf_head_probe import _probe_heads
from torchpare.prune.rules.hf_heads import (
    _KV_HEAD_ATTRS,
    _KV_SOURCE_ARGS,
    _PER_HEAD_PARAMS,
    _POS_PROJ,
    _Q_HEAD_ATTRS,
    UnsupportedAttentionError,
    _bind,
    _check_params,
    _guard_per_head_inputs,
    _HeadRule,
    _Heads,
    _hidden_channels,
    _hidden_norms,
    _input_channels,
    _join,
    _label_outputs,
    _per_head_param,
    _refresh_linear,
    _set_if_present,
    _set_widths,
    _Slice,
    _sync_stage_width,
    _tie_bias,
    _tie_heads,
    _tie_norm,
    _tie_residual,
    note_stage,
)
from torchpare.prune.rules.registry import (
    register_rule,
    register_trace_hook,
    unruled_transformers_classes,
)

__all__ = [
    "ProjAttentionRule",
    "GPT2AttentionRule",
    "InterleavedQKVRule",
    "register_transformers_rules",
    "rule_for_module",
    "UnsupportedAttentionError",
]


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
        note_stage(module, name)
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
        _set_widths(module, q.in_features, n_q * hd)
        _sync_stage_width(module, q.in_features)
        reduction = self._reduction(module)
        if reduction is not None:
            conv = module.get_submodule(reduction[0])
            conv.out_channels, conv.in_channels = int(conv.weight.shape[0]), int(conv.weight.shape[1])
        for path in _hidden_norms(module, self.post_norm):
            norm = module.get_submodule(path)
            if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
                norm.normalized_shape = tuple(norm.weight.shape)


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
    AlibiQKVRule(head_dim_attr="head_dim"),  # BLOOM: before the plain one, which would match too
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
    for cls, module in unruled_transformers_classes(model, _examined):
        rule = rule_for_module(module)
        if rule is not None:
            register_rule(cls, rule)
            new.append(cls)
    return new


register_trace_hook(register_transformers_rules)
