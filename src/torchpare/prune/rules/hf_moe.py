"""Hidden units of Hugging Face mixture-of-experts FFNs stored as fused 3-D tensors (transformers 5.x).

Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and similar keep all experts of a layer in two parameters::

    gate_up_proj: (num_experts, 2 * intermediate, hidden)   # rows [0, I) gate, [I, 2I) up
    down_proj:    (num_experts, hidden, intermediate)

and dispatch them through an experts interface (a Python loop, ``torch._grouped_mm``, batched
matmuls...). :class:`FusedExpertsRule` makes such a module one trace leaf, so whichever kernel runs
does not matter: hidden unit ``i`` is gate row ``i``, up row ``I + i`` and down column ``i``. One
3-D tensor holds one width for every expert, so unit ``i`` is removed from *all* experts of the
layer together (one group per MoE layer); the router and the number of experts are never touched,
and the hidden (residual) width flows through the experts. Under transformers' default grouped-matmul
kernels (anything but ``experts_implementation="eager"``) rows must stay 16-byte aligned, so a unit
is a block of 8 hidden units (``intermediate / 8`` units per group).

:func:`torchpare.prune.prune` does not prune this layout's units: it first splits such modules into
:class:`~torchpare.prune.rules.split_experts.SplitExperts` (each expert its own group, any width; see
:mod:`torchpare.prune.moe_experts`) and fuses them back where every expert kept one width. This rule
serves graphs built directly on fused experts, ``prune(..., dry_run=True)`` and classes that cannot be split.

As with attention, the layout is chosen from structure (the two parameters and their shapes) and
checked by running the module once per class on its real inputs: removing unit 0 must equal zeroing
its down column. Otherwise the unit is blocked with the reason, shown by ``graph.report()``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule, slice_tensor_attr
from torchpare.prune.rules.registry import (
    register_rule,
    register_trace_hook,
    unruled_transformers_classes,
)

__all__ = ["FusedExpertsRule", "TopKRouterRule", "register_moe_rules"]

_PROBED: dict[type, str | None] = {}
_ALIGN = 8
_examined: set[type] = set()


def _block(module: nn.Module) -> int:
    """Hidden units per unit: ``_ALIGN`` unless the experts run the plain Python loop (``"eager"``).

    transformers dispatches experts to ``torch._grouped_mm`` (and batched kernels) by default, which
    need 16-byte aligned rows: 8 units keep that for 16-bit and 32-bit weights.
    """
    impl = getattr(getattr(module, "config", None), "_experts_implementation", None)
    inter = module.down_proj.shape[2]
    return 1 if impl == "eager" or inter % _ALIGN else _ALIGN


def _sizes(module: nn.Module) -> tuple[int, int, int] | None:
    """``(experts, hidden, intermediate)`` when ``module`` holds exactly the fused Mixtral-style pair."""
    params = dict(module.named_parameters())  # an activation child (ACT2FN) has none
    if set(params) != {"gate_up_proj", "down_proj"}:
        return None
    gu, down = params["gate_up_proj"], params["down_proj"]
    if gu.dim() != 3 or down.dim() != 3:
        return None
    e, h, i = down.shape
    if gu.shape != (e, 2 * i, h):
        return None
    return int(e), int(h), int(i)


class FusedExpertsRule(ModuleRule):
    """Hidden units of fused experts (``gate_up_proj`` ``(E, 2I, H)``, ``down_proj`` ``(E, H, I)``).

    Unit ``i`` of the group is hidden unit ``i`` of every expert (gate row ``i``, up row ``I + i``,
    down column ``i``); the hidden width ``H`` is tied to the input and output channels.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Experts(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.gate_up_proj = nn.Parameter(torch.randn(2, 8, 4))
        ...         self.down_proj = nn.Parameter(torch.randn(2, 4, 4))
        ...     def forward(self, x):
        ...         gate, up = nn.functional.linear(x, self.gate_up_proj[0]).chunk(2, dim=-1)
        ...         return nn.functional.linear(torch.relu(gate) * up, self.down_proj[0])
        >>> _ = register_rule(Experts, FusedExpertsRule(), override=True)
        >>> from torchpare.prune.graph import DependencyGraph
        >>> net = nn.Sequential(nn.Linear(4, 4), Experts(), nn.Linear(4, 2))
        >>> [(g.id, g.size) for g in DependencyGraph.build(net, torch.randn(3, 4)).groups()]
        [('0', 4), ('1', 4)]
    """

    def propagate(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        sizes = _sizes(module)
        hidden_in = next(
            (a for a in call.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None
        )
        if hidden_in is None:
            hidden_in = call.kwargs.get("hidden_states")
        if sizes is None or not isinstance(hidden_in, torch.Tensor):
            raise ValueError(
                f"FusedExpertsRule: {type(module).__name__} at {name!r} needs gate_up_proj (E, 2I, H), "
                f"down_proj (E, H, I) and a hidden_states tensor."
            )
        _, _, inter = sizes
        x_in = ctx.channels(ctx.label(hidden_in), -1, call.where)
        ctx.union(ctx.param(name, "gate_up_proj", dim=2, role=ROLE_IN), x_in)
        rows = ctx.param(name, "gate_up_proj", dim=1, role=ROLE_OUT, unit="channel")
        ctx.union(rows[:inter], rows[inter:])
        cols = ctx.param(name, "down_proj", dim=2, role=ROLE_IN, unit="channel")
        ctx.union(cols, rows[:inter])
        block = _block(module)
        if block > 1:  # grouped-matmul kernels: whole blocks of hidden units, so widths stay aligned
            blocks = cols.reshape(inter // block, block)
            ctx.union(blocks, blocks[:, :1])
        out = ctx.param(name, "down_proj", dim=1, role=ROLE_OUT)
        ctx.union(out, x_in)  # the experts' output is added to the residual stream
        reason = _probe(call)
        if reason is not None:
            ctx.block(cols, f"{type(module).__name__} at {name!r}: {reason}")
        output = call.output
        if isinstance(output, torch.Tensor):
            return ctx.along(out, output.shape, dim=-1)
        return None

    def update(self, module: nn.Module) -> None:
        e, h, i = (int(s) for s in module.down_proj.shape)
        for attr, value in (("num_experts", e), ("hidden_dim", h), ("hidden_size", h)):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, value)
        for attr in ("intermediate_dim", "intermediate_size", "expert_dim"):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, i)


def _is_router(module: nn.Module) -> bool:
    """A top-k router: one ``weight`` ``(num_experts, hidden_dim)`` and those two int attributes."""
    params = dict(module.named_parameters())
    w = params.get("weight")
    return (
        set(params) == {"weight"}
        and w is not None
        and w.dim() == 2
        and getattr(module, "num_experts", None) == w.shape[0]
        and getattr(module, "hidden_dim", None) == w.shape[1]
        and isinstance(getattr(module, "top_k", None), int)
    )


class TopKRouterRule(ModuleRule):
    """A mixture-of-experts router (``weight`` ``(num_experts, hidden_dim)``): reads the hidden channels,
    keeps the experts. Its forward reshapes to ``self.hidden_dim``, refreshed after pruning."""

    def propagate(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        x = next((a for a in call.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
        if x is None:
            x = call.kwargs.get("hidden_states")
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"TopKRouterRule: {type(module).__name__} at {name!r} got no hidden_states tensor."
            )
        ctx.union(ctx.param(name, "weight", dim=1, role=ROLE_IN), ctx.channels(ctx.label(x), -1, call.where))
        reason = f"{type(module).__name__} at {name!r}: the router's experts are kept"
        ctx.block(ctx.param(name, "weight", dim=0, role=ROLE_OUT), reason)
        outputs = call.output if isinstance(call.output, (tuple, list)) else (call.output,)
        s = ctx.sentinel(reason, True)
        labels = [ctx.constant(s, o.shape) if isinstance(o, torch.Tensor) else None for o in outputs]
        return tuple(labels) if isinstance(call.output, (tuple, list)) else labels[0]

    def update(self, module: nn.Module) -> None:
        module.num_experts, module.hidden_dim = (int(n) for n in module.weight.shape)


def _probe(call: Call) -> str | None:
    """Removing hidden unit 0 of every expert equals zeroing its down column (once per class)."""
    cls = type(call.module)
    if cls in _PROBED:
        return _PROBED[cls]
    module = call.module
    inter = module.down_proj.shape[2]
    verdict: str | None = None
    # Remove _ALIGN units: grouped-matmul kernels need row strides of 16 bytes, so the probe keeps the
    # width's alignment (prune with round_to=_ALIGN under such kernels; see docs/pruning.md).
    n = _ALIGN if inter > _ALIGN else 1
    if inter > 1:
        masked, pruned = copy.deepcopy(module), copy.deepcopy(module)
        dev = module.down_proj.device
        keep_gu = torch.tensor([r for r in range(2 * inter) if r % inter >= n], dtype=torch.long, device=dev)
        keep = torch.arange(n, inter, device=dev)
        try:
            with torch.no_grad():
                masked.down_proj[:, :, :n] = 0
                slice_tensor_attr(pruned, "gate_up_proj", 1, keep_gu)
                slice_tensor_attr(pruned, "down_proj", 2, keep)
                FusedExpertsRule().update(pruned)
                ref = masked(*call.args, **call.kwargs)
                got = pruned(*call.args, **call.kwargs)
            if (
                not isinstance(ref, torch.Tensor)
                or not isinstance(got, torch.Tensor)
                or ref.shape != got.shape
            ):
                verdict = "its output changes shape after one hidden unit is removed, so its units are kept"
            elif float((ref.double() - got.double()).abs().max()) > 1e-4 * max(float(ref.abs().max()), 1.0):
                verdict = (
                    "removing one hidden unit changes its output (the forward does not read gate/up rows "
                    "as [gate | up] halves), so its units are kept"
                )
        except Exception as err:  # noqa: BLE001 - any failure of the pruned forward is the verdict
            verdict = (
                f"its forward fails after one hidden unit is removed ({type(err).__name__}: {str(err)[:200]}), "
                f"so its units are kept"
            )
    _PROBED[cls] = verdict
    return verdict


def register_moe_rules(model: nn.Module) -> list[type]:
    """Register :class:`FusedExpertsRule` / :class:`TopKRouterRule` for ``model``'s MoE classes (a trace hook).

    Only transformers classes, matched on their first instance by structure.

    Args:
        model: a model.

    Returns:
        The classes newly registered.

    Example:
        >>> from torch import nn
        >>> register_moe_rules(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    new = []
    for cls, module in unruled_transformers_classes(model, _examined):
        if _sizes(module) is not None:
            register_rule(cls, _RULE)
        elif _is_router(module):
            register_rule(cls, _ROUTER)
        else:
            continue
        new.append(cls)
    return new


_RULE = FusedExpertsRule()
_ROUTER = TopKRouterRule()
register_trace_hook(register_moe_rules)
