"""The behavioural check of a head layout: run the module with one head removed and with it zeroed.

A layout is chosen from a module's structure (its Linears and head size), a hint. Whether its forward
really follows head pruning is checked here on the module's real inputs from the trace, once per class
and input signature, without reading the forward's code.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchpare.prune.rules.base import Call
from torchpare.prune.rules.hf_heads import _HIDDEN_ATTRS, HEADS_WIDTH_CLASSES, _Heads

# Verdicts per (class, rule, inputs given): None = removing a head is exact, else the reason it is not.
_PROBED: dict[tuple[Any, ...], str | None] = {}
_NO_CACHE_ARGS = ("past_key_value", "past_key_values", "layer_past", "cache")
_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks")


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
        _PROBED[key] = _run_probe(rule, _on_real_values(call), heads)
    reason = _PROBED[key]
    if reason is not None:
        ctx.block(per_q_head, f"{type(module).__name__} at {call.module_name!r}: {reason}")


def _on_real_values(call: Call) -> Call:
    """``call`` itself, or a float32 stand-in for it when its values cannot be compared exactly.

    * On the ``meta`` device (a model planned without weights): a copy of the module with small
      random weights on the CPU and random inputs of the same shapes (integer and boolean inputs
      become zeros / all-True masks).
    * In a low-precision dtype (bfloat16, float16): a float32 copy with the same weights and inputs;
      the rounding of a half-precision forward (about 2e-3 in bfloat16) is larger than the probe's
      tolerance and would read as "the forward does not follow head pruning".

    The probe checks how the forward's *code* follows head pruning, which float32 (and random)
    values show as well as the model's own.
    """
    module = call.module
    tensors = list(module.parameters()) + list(module.buffers())
    inputs = [
        v for a in (*call.args, *call.kwargs.values()) for v in (a if isinstance(a, (tuple, list)) else (a,))
    ]
    inputs = [v for v in inputs if isinstance(v, torch.Tensor)]
    meta = any(t.is_meta for t in tensors + inputs)
    low = any(t.is_floating_point() and t.dtype in (torch.bfloat16, torch.float16) for t in tensors + inputs)
    if not meta and not low:
        return call
    gen = torch.Generator().manual_seed(0)
    if meta:
        real = copy.deepcopy(module).to_empty(device="cpu").float()
        with torch.no_grad():
            for t in list(real.parameters()) + list(real.buffers()):
                if t.is_floating_point():
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.02)
                else:
                    t.zero_()
    else:
        real = copy.deepcopy(module).float()

    def value(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        if not v.is_meta:
            return v.float() if v.is_floating_point() else v
        if v.is_floating_point():
            return torch.randn(v.shape, generator=gen)
        if v.dtype is torch.bool:
            return torch.ones(v.shape, dtype=torch.bool)
        return torch.zeros(v.shape, dtype=v.dtype)

    def values(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return type(v)(value(x) for x in v)
        return value(v)

    args = tuple(values(a) for a in call.args)
    kwargs = {k: values(v) for k, v in call.kwargs.items()}
    return dataclasses.replace(call, module=real, args=args, kwargs=kwargs, output=None)


def _drop_heads(t: Any, heads: _Heads, gone: list[int]) -> Any:
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 4 and t.shape[1] == heads.n_q:
        keep = torch.tensor([h for h in range(heads.n_q) if h not in gone], dtype=torch.long, device=t.device)
        return t.index_select(1, keep)
    return t


def _run_probe(rule: Any, call: Call, heads: _Heads) -> str | None:
    """The verdict for ``call.module``'s class (``None``: heads prune exactly).

    A module attribute named like a width (``hidden_size``, ``embed_dim``...) means the hidden width in
    current transformers, and the concatenated heads' width in older forwards (``attn_output.reshape(
    bsz, q_len, self.hidden_size)``). The first reading is tried first; if the pruned forward fails,
    the second is tried, and the class keeps the reading that works (``HEADS_WIDTH_CLASSES``).
    """
    cls = type(call.module)
    first = _attempt(rule, call, heads)
    if first is None or not any(isinstance(getattr(call.module, a, None), int) for a in _HIDDEN_ATTRS):
        return first
    HEADS_WIDTH_CLASSES.add(cls)
    if _attempt(rule, call, heads) is None:
        return None
    HEADS_WIDTH_CLASSES.discard(cls)
    return first


def _traced_by_a_mode(hook: Any) -> bool:
    return isinstance(getattr(hook, "__self__", None), TorchFunctionMode)


def _copies(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Two deep copies of ``module`` with its own hooks (e.g. the ALiBi head slicer) but without the
    hooks of the tracer running now (they would trace the probe's forwards, and copy the tracer)."""
    saved = [(m, name, getattr(m, name)) for m in module.modules() for name in _HOOK_TABLES]
    try:
        for m, name, hooks in saved:
            m.__dict__[name] = OrderedDict((k, h) for k, h in hooks.items() if not _traced_by_a_mode(h))
        return copy.deepcopy(module), copy.deepcopy(module)
    finally:
        for m, name, hooks in saved:
            m.__dict__[name] = hooks


def _attempt(rule: Any, call: Call, heads: _Heads) -> str | None:
    slices, out_cols = rule.unit_slices(call.module, heads, 0)
    try:
        masked, pruned = _copies(call.module)
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
            keep: dict[tuple[str, int], torch.Tensor] = {}
            for path, dim, idx, consumer in slices:
                t = masked.get_parameter(path)
                if consumer:
                    t.index_fill_(dim, torch.tensor(idx, device=t.device), 0)
                kept = sorted(set(range(t.shape[dim])) - set(idx))
                keep[(path, dim)] = torch.tensor(kept, dtype=torch.long, device=t.device)
            rule.prune(pruned, keep)  # the surgery's own path (slices, then update and any fix-up)
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
