"""``graph.report()``: what was found, what is prunable, and why the rest is blocked."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchpare.prune.graph.dependency import DependencyGraph

__all__ = ["format_report"]

_STRUCTURAL = ("model input", "model output", "ignored module", "a tensor made outside")


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
    return "\n".join(lines)
