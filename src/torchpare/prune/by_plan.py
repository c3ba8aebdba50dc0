"""Prune a model by hand with an explicit plan, recorded so it can be saved: :func:`prune_by_plan`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from torchpare.prune.graph import DependencyGraph
from torchpare.prune.history import begin_record
from torchpare.prune.moe_experts import split_experts
from torchpare.prune.rules.hf_moe import _sizes
from torchpare.prune.surgery import apply_plan

__all__ = ["prune_by_plan"]


def prune_by_plan(
    model: nn.Module,
    example_inputs: Any,
    plan: Mapping[Any, Sequence[int]],
    ignored: Iterable[str | nn.Module] = (),
) -> nn.Module:
    """Physically prune ``model`` in place with ``plan`` and record it so :func:`save_pruned` works.

    A front door to :func:`torchpare.prune.surgery.apply_plan`: it traces the graph, applies the
    plan and records the step (formerly ``torchpare.prune.io.apply_plan``).

    Args:
        model: The model to prune (modified in place and returned).
        example_inputs: Inputs to trace the dependency graph with (tensor, tuple or dict of kwargs).
        plan: ``{group_id: indices of units to remove}`` with ids of ``DependencyGraph.build(model, ...)``.
            Ids of single experts (``"model.layers.0.mlp.experts.1"``, as :func:`prune` plans them)
            split that fused experts module first (:func:`~torchpare.prune.moe_experts.split_experts`).
        ignored: Modules (names or objects) excluded from pruning when building the graph.

    Returns:
        ``model``, pruned.

    Raises:
        KeyError: an unknown group id (raised by the graph, naming close ids).
        ValueError: a blocked group, an index out of range, or a plan removing every unit of a group.
        IgnoredModuleError: an ignored entry that is no module of ``model``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> prune_by_plan(net, torch.randn(1, 4), {"0": [0, 1, 2]})[0].out_features
        5
    """
    _split_planned_experts(model, example_inputs, plan)
    graph = DependencyGraph.build(model, example_inputs, ignored=ignored)
    apply_plan(graph, plan, retrace=True, record=True)
    return model


def _split_planned_experts(model: nn.Module, example_inputs: Any, plan: Mapping[Any, Sequence[int]]) -> None:
    """A plan naming one expert of fused experts (``"<experts>.<e>"``, the ids ``prune()`` plans with):
    split those experts modules first (recorded), so the plan's groups exist."""
    fused = {name for name, m in model.named_modules() if _sizes(m) is not None}
    wanted = sorted({
        key.rpartition(".")[0] for key in plan
        if isinstance(key, str) and key.rpartition(".")[2].isdigit() and key.rpartition(".")[0] in fused
    })
    if wanted:
        begin_record(model, example_inputs)  # the record starts from the fused architecture
        split_experts(model, wanted)
