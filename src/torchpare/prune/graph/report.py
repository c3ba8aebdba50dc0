"""``graph.report()``: what was found, what is prunable, and why the rest is blocked.

Also :func:`headless_attention`: modules that look like multi-head attention (q/k/v-like projections)
but got no head unit, with the reason, so that a layout no rule understands is never lost silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import nn

if TYPE_CHECKING:
    from torchpare.prune.graph.dependency import DependencyGraph

__all__ = [
    "format_report",
    "headless_attention",
    "HeadlessAttention",
    "group_kinds",
    "matches_units",
    "UNIT_KINDS",
]

_STRUCTURAL = ("model input", "model output", "ignored module", "a tensor made outside")
# Children that make a module look like attention: a q/k/v triple, or one fused q|k|v projection.
_QKV_TRIPLES = (
    ("q_proj", "k_proj", "v_proj"),
    ("query", "key", "value"),
    ("q_lin", "k_lin", "v_lin"),
    ("q", "k", "v"),
    ("query_proj", "key_proj", "value_proj"),
    ("to_q", "to_k", "to_v"),
)
_FUSED = ("query_key_value", "c_attn", "qkv", "qkv_proj", "Wqkv", "in_proj")
_HEAD_UNITS = ("head", "kv_head")
_CHILD_NAMES = frozenset(n for triple in _QKV_TRIPLES for n in triple) | frozenset(_FUSED)


class HeadlessAttention(NamedTuple):
    """A module that looks like multi-head attention but has no prunable head unit."""

    module_name: str
    class_name: str
    reason: str


def _weight(module: nn.Module | None) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, nn.Parameter) and w.dim() == 2


def _query_like(module: nn.Module) -> str | None:
    """The name of the (query or fused) projection when ``module`` looks like attention, else ``None``.

    ``nn.MultiheadAttention`` (fused ``in_proj_weight``) counts, with ``"in_proj_weight"``.
    """
    children = module._modules  # read, never written: no copy (named_children() costs a generator)
    if children.keys().isdisjoint(_CHILD_NAMES) and "in_proj_weight" not in module._parameters:
        return None  # most modules: one set test instead of 6 triples and 6 fused names
    for q, k, v in _QKV_TRIPLES:
        if all(_weight(children.get(n)) for n in (q, k, v)):
            return q
    for name in _FUSED:
        if _weight(children.get(name)):
            return name
    if isinstance(getattr(module, "in_proj_weight", None), nn.Parameter) and hasattr(module, "num_heads"):
        return "in_proj_weight"
    return None


def headless_attention(graph: DependencyGraph) -> list[HeadlessAttention]:
    """Attention-like modules of ``graph.model`` with more than one head and no prunable head unit.

    Args:
        graph: a built graph.

    Returns:
        One entry per module, with the reason: the blocked reason of the group holding its query
        rows, or that no head rule matched its layout.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune.graph import DependencyGraph
        >>> headless_attention(DependencyGraph.build(nn.Linear(2, 2), torch.randn(1, 2)))
        []
    """
    found: list[HeadlessAttention] = []
    groups = graph.all_groups()
    # the trace's walk of the modules when it is still there (named_modules() walks again)
    modules = getattr(graph.ctx, "modules", None) or dict(graph.model.named_modules())
    seen: set[int] = set()
    by_owner: dict[str, set[int]] | None = None
    for name, module in modules.items():
        if id(module) in seen:  # a shared module once, under its first name (as named_modules())
            continue
        seen.add(id(module))
        q = _query_like(module)
        if q is None:
            continue
        heads = next(
            (
                getattr(module, a)
                for a in ("num_heads", "num_attention_heads", "n_heads", "n_head")
                if isinstance(getattr(module, a, None), int)
            ),
            None,
        )
        if heads is not None and heads < 2:
            continue
        prefix = f"{name}." if name else ""
        if by_owner is None:  # member module name -> indices of the groups it is in (once per call)
            by_owner = {}
            for i, g in enumerate(groups):
                for m in g.members:
                    by_owner.setdefault(m.module_name, set()).add(i)
        hits: set[int] = set()
        for owner, indices in by_owner.items():
            if owner == name or owner.startswith(prefix):
                hits |= indices
        own = [groups[i] for i in sorted(hits)]
        if any(g.unit in _HEAD_UNITS and g.blocked_by is None for g in own):
            continue
        q_path = name if q == "in_proj_weight" else f"{prefix}{q}"
        q_param = "in_proj_weight" if q == "in_proj_weight" else "weight"
        q_groups = [
            g
            for g in own
            if any(m.module_name == q_path and m.param_name == q_param and m.role == "out" for m in g.members)
        ]
        blocked = [g.blocked_by for g in q_groups if g.blocked_by is not None]
        if blocked and all(r.startswith(_STRUCTURAL) for r in blocked):
            continue  # kept on purpose (ignored by the user, a model output)
        if blocked:
            reason = blocked[0]
        elif q_groups:
            reason = (
                f"no head rule matched {type(module).__name__}'s layout, so its query rows are pruned as "
                f"single channels; register a head rule for it (see docs/design/pruning-transformers.md)"
            )
        else:
            reason = (
                f"no head rule matched {type(module).__name__}'s layout; register one for it "
                f"(see docs/design/pruning-transformers.md)"
            )
        found.append(HeadlessAttention(name, type(module).__name__, reason))
    return found


def format_report(graph: DependencyGraph) -> str:
    """Format the groups of ``graph``: one line per prunable group, blocked ones grouped by reason."""
    groups = graph.all_groups()
    prunable = graph.groups()
    inexact = [g for g in prunable if not g.exact]
    lines = [
        f"DependencyGraph of {type(graph.model).__name__}: {len(groups)} groups, {len(prunable)} prunable "
        f"({len(inexact)} inexact), {len(groups) - len(prunable)} blocked",
        "prunable groups:",
    ]
    for g in prunable:
        flag = "" if g.exact else f"  [inexact: {g.inexact_reason}]"
        modules = g.module_names()
        shown = ", ".join(modules[:4]) + (f", ... (+{len(modules) - 4})" if len(modules) > 4 else "")
        lines.append(f"  {g.id}: {g.size} {g.unit}s, {len(g.members)} tensors in {shown}{flag}")
    by_reason: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        if g.blocked_by is not None:
            by_reason[g.blocked_by].append(g.id)
    ops = {r: ids for r, ids in by_reason.items() if not r.startswith(_STRUCTURAL)}
    kept = {r: ids for r, ids in by_reason.items() if r.startswith(_STRUCTURAL)}
    if ops:
        lines.append("blocked (register_rule(...) for the op or module to enable them):")
        for reason, ids in ops.items():
            lines.append(f"  {reason}: groups {', '.join(ids)}")
    if kept:
        lines.append("kept by design:")
        for reason, ids in kept.items():
            lines.append(f"  {reason}: groups {', '.join(ids)}")
    headless = getattr(graph, "headless", None) or []
    if headless:
        lines.append("attention without head units (heads are not pruned):")
        for h in headless:
            lines.append(f"  {h.module_name} ({h.class_name}): {h.reason}")
    return "\n".join(lines)


UNIT_KINDS = ("channel", "head", "kv_head", "ffn", "hidden")


def _is_residual_member(model: nn.Module, module_name: str, param_name: str, dim: int) -> bool:
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return False
    if isinstance(module, nn.Embedding):
        return param_name == "weight" and dim == 1
    name = type(module).__name__
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("LayerNorm", "RMSNorm"))


def group_kinds(graph: DependencyGraph, group: Any) -> set[str]:
    """The unit kinds a group answers to in ``prune(..., units=...)``.

    A head group is ``{"head"}`` or ``{"kv_head"}``. A channel group is ``"channel"`` plus either
    ``"hidden"`` (the residual width of a transformer: the group holds an embedding table's width or a
    LayerNorm/RMSNorm over it) or ``"ffn"`` (any other channel group: MLP and expert hidden units; in
    a CNN, every channel group).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune.graph import DependencyGraph
        >>> g = DependencyGraph.build(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
        >>> sorted(group_kinds(g, g.groups()[0]))
        ['channel', 'ffn']
    """
    if group.unit != "channel":
        return {group.unit}
    residual = any(
        _is_residual_member(graph.model, m.module_name, m.param_name, m.dim) for m in group.members
    )
    return {"channel", "hidden" if residual else "ffn"}


def matches_units(graph: DependencyGraph, group: Any, units: Iterable[str] | None) -> bool:
    """Whether ``group`` is selected by ``prune(..., units=units)`` (``None``: every group).

    Raises:
        ValueError: an unknown unit kind (the message lists :data:`UNIT_KINDS`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune.graph import DependencyGraph
        >>> g = DependencyGraph.build(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
        >>> matches_units(g, g.groups()[0], ("hidden",)), matches_units(g, g.groups()[0], ("ffn",))
        (False, True)
    """
    if units is None:
        return True
    wanted = {units} if isinstance(units, str) else set(units)
    unknown = wanted - set(UNIT_KINDS)
    if unknown:
        raise ValueError(
            f"prune(units={tuple(sorted(wanted))}): unknown unit kind(s) {sorted(unknown)}; use {UNIT_KINDS}."
        )
    return bool(group_kinds(graph, group) & wanted)
