"""Physical pruning: the one surgery entry point, :func:`apply_plan`, and its two phases.

Every path that prunes calls :func:`apply_plan` (``DependencyGraph.prune``, :func:`prune_group`,
:func:`torchpare.prune.prune`, :func:`~torchpare.prune.deploy_subnet`,
:func:`~torchpare.prune.prune_by_plan`). It works in two phases:

1. :func:`plan_edits` turns a plan (group id -> units to remove) into :class:`~torchpare.prune.history.Edits`:
   the indices to keep per tensor and dim, and the size attributes to set. Only the graph is read.
2. :func:`apply_edits` performs them: leaf modules through their rule's
   :meth:`~torchpare.prune.rules.ModuleRule.prune` (which also updates ``out_channels``,
   ``num_heads`` and config fields), other parameters by plain slicing followed by the ``update`` of
   any rule registered for the owner's class. Tied parameters stay tied.

The edits are what the pruning record stores (:mod:`torchpare.prune.history`), so
:func:`torchpare.prune.load_pruned` replays phase 2 without tracing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.prune.history import Edits, append_step, begin_record
from torchpare.prune.rules.base import slice_tensor_attr
from torchpare.prune.rules.registry import MODULE_RULES, TRACE_HOOKS, module_rule_for, run_class_hooks

if TYPE_CHECKING:
    from torchpare.prune.graph import ChannelGroup, DependencyGraph
    from torchpare.prune.graph.dependency import Plan

__all__ = ["apply_plan", "prune_group", "plan_edits", "apply_edits"]


def apply_plan(
    graph: DependencyGraph, plan: Plan, *, retrace: bool = False, record: bool = False
) -> dict[str, list[int]]:
    """Remove the planned units from ``graph.model`` in place: the one surgery entry point.

    Args:
        graph: the dependency graph of the model (its groups give the plan's meaning).
        plan: ``{group id or ChannelGroup: indices of units to remove}``; validated by
            ``graph.normalize_plan`` first, so nothing changes when it is invalid.
        retrace: rebuild ``graph`` on the pruned model afterwards (same ids, smaller sizes). Without
            it the graph describes the model before pruning (cheap trials on a copy).
        record: keep the step in the model's pruning record (started on first use, from
            ``graph.example_inputs``), so :func:`torchpare.prune.save_pruned` can save the model.

    Returns:
        The normalized plan that was applied (``{group id: sorted indices}``, empty entries dropped).

    Raises:
        KeyError: unknown group id.
        ValueError: blocked group, index out of range, or every unit of a group removed.
        RuntimeError: with ``retrace``, the pruned model fails its forward (a size it reads from a
            config or a hard-coded int did not follow the pruning); the model is left pruned.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune import DependencyGraph
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> g = DependencyGraph.build(net, torch.randn(1, 4))
        >>> apply_plan(g, {"0": [7, 0]}, retrace=True)
        {'0': [0, 7]}
        >>> net[0].out_features, g.group("0").size
        (6, 6)
    """
    normalized = graph.normalize_plan(plan)
    model = graph.model
    if record:
        begin_record(model, graph.example_inputs)
    edits = plan_edits(graph, normalized)
    apply_edits(model, edits)
    if record:
        append_step(model, normalized, graph.ignored, edits)
    if retrace:
        try:
            graph._trace()
        except Exception as exc:  # the pruned model itself fails: say so, with the cause attached
            raise RuntimeError(
                f"DependencyGraph.prune(): the model no longer runs after pruning groups "
                f"{sorted(normalized)} ({type(exc).__name__}: {exc}). The model has been changed in "
                f"place. A size its forward reads from a config or a hard-coded int (e.g. a reshape "
                f"to config.hidden_size) did not follow the pruning: add those modules to `ignored` "
                f"or register a rule for them (see docs/design/pruning.md)."
            ) from exc
    return normalized


def prune_group(graph: DependencyGraph, group: ChannelGroup | str, indices: Iterable[int]) -> None:
    """Remove units ``indices`` of ``group`` from ``graph.model`` in place, then rebuild ``graph``.

    A front door to :func:`apply_plan` for one group (``apply_plan(graph, {group: indices},
    retrace=True)``).

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
    apply_plan(graph, {group: list(indices)}, retrace=True)


def plan_edits(graph: DependencyGraph, plan: dict[str, list[int]]) -> Edits:
    """Phase 1: the :class:`~torchpare.prune.history.Edits` of a normalized ``plan``; reads only."""
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

    edits = Edits()
    for (module, pname, dim), removed in removals.items():
        tensor = getattr(get_submodule(model, module, who="prune"), pname)
        size = int(tensor.shape[dim])
        keep = sorted(set(range(size)) - removed)
        leaf = leaf_of.get((module, pname))
        if leaf is not None:
            rel = f"{module[len(leaf) :].lstrip('.')}.{pname}".lstrip(".")
            edits.leaves.setdefault(leaf, {})[(rel, dim)] = keep
            edits.sizes[(leaf, rel, dim)] = size
        else:
            edits.tensors.append((module, pname, dim, keep))
            edits.sizes[(module, pname, dim)] = size
    removed_units = {gid: set(units) for gid, units in plan.items()}
    for module_name, attr, index, units in graph.ctx.size_units:
        kept = sum(1 for u in units if u is None or u[1] not in removed_units.get(u[0], ()))
        edits.attributes.append((module_name, attr, index, kept))
    return edits


def apply_edits(model: nn.Module, edits: Edits) -> None:
    """Phase 2: slice ``model`` in place as ``edits`` say (also how a saved record is replayed).

    Raises:
        ValueError: a tensor whose size along the edited dim is not the one ``edits`` were made for
            (names the module, tensor and both sizes); nothing is changed in that case.
        TypeError: a leaf module without a registered rule.
    """
    for (module, path, dim), size in edits.sizes.items():
        owner_path = f"{module}.{path}".strip(".").rpartition(".")
        owner = get_submodule(model, owner_path[0], who="prune")
        tensor = getattr(owner, owner_path[2], None)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() <= dim or int(tensor.shape[dim]) != size:
            have = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
            raise ValueError(
                f"prune: tensor {path!r} of module {module!r} has shape {have}, but the edits were made "
                f"for size {size} along dim {dim}; apply them to the model they were planned on."
            )
    # Rules registered lazily (class and trace hooks, e.g. the transformers attention rules) are
    # registered here too, so a replay in a fresh process finds the rules the trace found.
    for hook in TRACE_HOOKS:
        hook(model)
    run_class_hooks({type(m) for m in model.modules()})
    tied = _tied_owners(model)
    for leaf, keep in edits.leaves.items():
        module = get_submodule(model, leaf, who="prune")
        rule = module_rule_for(module)
        if rule is None:
            raise TypeError(
                f"prune(): no rule for leaf module {leaf!r} ({type(module).__name__}); "
                f"was a rule unregistered after building the graph?"
            )
        rule.prune(module, {key: torch.tensor(idx, dtype=torch.long) for key, idx in keep.items()})
    owners: dict[str, nn.Module] = {}
    for module, pname, dim, idx in edits.tensors:
        slice_tensor_attr(model, f"{module}.{pname}".lstrip("."), dim, torch.tensor(idx, dtype=torch.long))
        owners[module] = get_submodule(model, module, who="prune")
    for owner in owners.values():
        rule = _rule_by_class(owner)
        if rule is not None:
            rule.update(owner)
    _resize_attributes(model, edits.attributes)
    _retie(model, tied)


def _resize_attributes(model: nn.Module, attributes: list[tuple[str, str, int, int]]) -> None:
    """Set each size attribute the rules declared (``LabelContext.size_attribute``) to the channels kept."""
    for module_name, attr, index, kept in attributes:
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
