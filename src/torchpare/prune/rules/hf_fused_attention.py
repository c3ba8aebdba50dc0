"""Head rules for fused q|k|v projections: GPT-2's ``c_attn`` and per-kv-group ``query_key_value``.

Part of the Hugging Face head rules (see :mod:`torchpare.prune.rules.hf_attention`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call
from torchpare.prune.rules.hf_head_probe import _probe_heads
from torchpare.prune.rules.hf_heads import (
    _Q_HEAD_ATTRS,
    UnsupportedAttentionError,
    _bind,
    _check_params,
    _guard_per_head_inputs,
    _HeadRule,
    _Heads,
    _hidden_channels,
    _join,
    _label_outputs,
    _linear_like_sizes,
    _refresh_linear,
    _set_if_present,
    _set_widths,
    _Slice,
    _tie_bias,
    _tie_heads,
    _tie_residual,
)

__all__ = ["GPT2AttentionRule", "InterleavedQKVRule"]


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
        # transformers >= 5.25: multi-query Falcon repeats its kv head num_key_value_groups times
        _set_if_present(module, ("num_key_value_groups",), n_q // n_kv)
        _set_if_present(module, ("split_size",), n_q * hd)
        _set_widths(module, fused.in_features, n_q * hd)
