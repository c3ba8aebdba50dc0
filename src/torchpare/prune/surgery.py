"""Physical pruning: slice every member of the planned groups, then fix module attributes.

The whole plan is computed from one graph first (indices to keep per tensor and dim), then applied:
leaf modules through their rule's :meth:`~torchpare.prune.rules.ModuleRule.prune` (which also updates
``out_channels``, ``num_heads`` and config fields), other parameters by plain slicing followed by the
``update`` of any rule registered for the owner's class. Tied parameters stay tied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.prune.rules.base import slice_tensor_attr
from torchpare.prune.rules.registry import MODULE_RULES, module_rule_for

if TYPE_CHECKING:
    from torchpare.prune.graph import ChannelGroup, DependencyGraph

__all__ = ["prune_group", "apply_plan"]


def prune_group(graph: DependencyGraph, group: ChannelGroup | str, indices: Iterable[int]) -> None:
    """Remove units ``indices`` of ``group`` from ``graph.model`` in place, then rebuild ``graph``.

    Args:
        graph: the dependency graph of the model.
        group: a group of ``graph`` or its id.
        indices: unit indices to remove.

    Raises:
        KeyError: unknown group id.
        ValueError: blocked group, index out of range, or every unit removed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune import DependencyGraph
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
        >>> g = DependencyGraph.build(net, torch.randn(1, 3, 6, 6))
        >>> prune_group(g, "0", [1, 5])
        >>> net[0].out_channels, net[1].num_features, net[3].in_channels
        (6, 6, 6)
    """
    graph.prune({group: list(indices)})


def apply_plan(graph: DependencyGraph, plan: dict[str, list[int]]) -> None:
    """Apply a validated plan (``graph.normalize_plan`` output) without rebuilding the graph."""
    model = graph.model
    removals: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for gid, units in plan.items():
        group = graph.group(gid)
        for m in group.members:
            target = removals[(m.module_name, m.param_name, m.dim)]
            for u in units:
                target.update(m.index_map[u])
    leaf_of: dict[tuple[str, str], str | None] = {}
    for k, info in graph.ctx.slices.items():  # a leaf's rule owns the tensor even if functions read it too
        if leaf_of.get((k[0], k[1])) is None:
            leaf_of[(k[0], k[1])] = info.leaf
    tied = _tied_owners(model)

    per_leaf: dict[str, dict[tuple[str, int], torch.Tensor]] = defaultdict(dict)
    generic: list[tuple[str, str, int, torch.Tensor]] = []
    for (module, pname, dim), removed in removals.items():
        tensor = getattr(get_submodule(model, module, who="prune"), pname)
        keep = torch.tensor(sorted(set(range(tensor.shape[dim])) - removed), dtype=torch.long)
        leaf = leaf_of.get((module, pname))
        if leaf is not None:
            rel = f"{module[len(leaf) :].lstrip('.')}.{pname}".lstrip(".")
            per_leaf[leaf][(rel, dim)] = keep
        else:
            generic.append((module, pname, dim, keep))

    for leaf, keep in per_leaf.items():
        module = get_submodule(model, leaf, who="prune")
        rule = module_rule_for(module)
        if rule is None:
            raise TypeError(
                f"prune(): no rule for leaf module {leaf!r} ({type(module).__name__}); "
                f"was a rule unregistered after building the graph?"
            )
        rule.prune(module, keep)
    owners: dict[str, nn.Module] = {}
    for module, pname, dim, keep in generic:
        slice_tensor_attr(model, f"{module}.{pname}".lstrip("."), dim, keep)
        owners[module] = get_submodule(model, module, who="prune")
    for owner in owners.values():
        rule = _rule_by_class(owner)
        if rule is not None:
            rule.update(owner)
    _resize_attributes(model, graph.ctx.size_units, plan)
    _retie(model, tied)


def _resize_attributes(
    model: nn.Module, size_units: list[tuple[str, str, int, list[tuple[str, int] | None]]], plan: dict[str, list[int]]
) -> None:
    """Set each size attribute the rules declared (``LabelContext.size_attribute``) to the channels kept."""
    removed = {gid: set(units) for gid, units in plan.items()}
    for module_name, attr, index, units in size_units:
        kept = sum(1 for u in units if u is None or u[1] not in removed.get(u[0], ()))
        module = get_submodule(model, module_name, who="prune")
        value = getattr(module, attr)
        if isinstance(value, int):
            setattr(module, attr, kept)
            continue
        entries = list(value)
        entries[index] = kept
        setattr(module, attr, torch.Size(entries) if isinstance(value, torch.Size) else type(value)(entries))


def _rule_by_class(module: nn.Module):  # noqa: ANN202 - ModuleRule | None
    for base in type(module).__mro__:
        if base in MODULE_RULES:
            return MODULE_RULES[base]
    return None


def _tied_owners(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    seen: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for m in model.modules():
        for name, p in m._parameters.items():
            if p is not None:
                seen[id(p)].append((m, name))
    return [owners for owners in seen.values() if len(owners) > 1]


def _retie(model: nn.Module, tied: list[list[tuple[nn.Module, str]]]) -> None:
    """Parameters shared before pruning (tied embeddings) are shared again afterwards."""
    for owners in tied:
        first_m, first_n = owners[0]
        ref = first_m._parameters[first_n]
        for m, n in owners[1:]:
            if m._parameters[n] is not ref and m._parameters[n].shape == ref.shape:
                m._parameters[n] = ref
