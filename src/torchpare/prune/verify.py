"""Check the core guarantee: the pruned model equals the original with removed units zeroed at consumers."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.graph.dependency import Plan
from torchpare.prune.graph.trace import _split_inputs

__all__ = ["PruningMismatchError", "mask_like_plan", "verify_pruning"]


class PruningMismatchError(ValueError):
    """The pruned model's outputs differ from the masked original's."""


def mask_like_plan(
    model: nn.Module, plan: Plan, example_inputs: Any, ignored: Iterable[str | nn.Module] = ()
) -> nn.Module:
    """A deep copy of ``model`` whose planned units are zeroed at their consumers (``role="in"`` slices).

    Args:
        model: the original (unpruned) model; not modified.
        plan: ``{group id: unit indices to remove}``, ids from ``DependencyGraph.build(model, ...)``.
        example_inputs: inputs to trace the copy.
        ignored: as in :meth:`DependencyGraph.build`.

    Returns:
        The masked copy.

    Raises:
        ValueError: the plan touches a group that is not exact (pruning through normalization
            statistics has no zeroed equivalent) or is invalid (see ``DependencyGraph.normalize_plan``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> masked = mask_like_plan(net, {"0": [0]}, torch.randn(1, 4))
        >>> bool(masked[2].weight[:, 0].eq(0).all()), bool(net[2].weight[:, 0].eq(0).all())
        (True, False)
    """
    masked = copy.deepcopy(model)
    graph = DependencyGraph.build(masked, example_inputs, ignored=_names(model, ignored))
    norm = graph.normalize_plan(plan)
    with torch.no_grad():
        for gid, units in norm.items():
            group = graph.group(gid)
            if not group.exact:
                raise ValueError(
                    f"verify_pruning(): group {gid!r} is not exact ({group.inexact_reason}), so pruning it "
                    f"has no zeroed equivalent; "
                    f"leave it out of the plan to verify, or check it by evaluation."
                )
            for m in group.members:
                if m.role != "in":
                    continue
                tensor = getattr(get_submodule(masked, m.module_name, who="mask_like_plan"), m.param_name)
                idx = torch.tensor(sorted(i for u in units for i in m.index_map[u]), device=tensor.device)
                tensor.index_fill_(m.dim, idx, 0)
    return masked


def verify_pruning(
    original: nn.Module,
    pruned: nn.Module,
    example_inputs: Any,
    plan: Plan,
    atol: float = 1e-5,
    ignored: Iterable[str | nn.Module] = (),
) -> float:
    """Compare ``pruned`` with ``original`` masked by ``plan`` (eval mode) and return the max abs diff.

    Args:
        original: the model before pruning (not modified).
        pruned: the model after ``graph.prune(plan)``.
        example_inputs: inputs for both models (tensor, tuple, or dict of kwargs).
        plan: the plan that was applied, keyed by the original graph's group ids.
        atol: largest allowed absolute difference.
        ignored: as used to build the graph.

    Returns:
        The largest absolute difference over all floating output tensors.

    Raises:
        PruningMismatchError: a difference above ``atol`` or an output of another shape (names the
            output path, e.g. ``logits`` or ``[0]``).
        ValueError: the plan is invalid or touches an inexact group.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune import DependencyGraph
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> import copy
        >>> pruned = copy.deepcopy(net)
        >>> DependencyGraph.build(pruned, torch.randn(1, 4)).prune({"0": [1, 3]})
        >>> verify_pruning(net, pruned, torch.randn(3, 4), {"0": [1, 3]}) < 1e-5
        True
    """
    masked = mask_like_plan(original, plan, example_inputs, ignored)
    args, kwargs = _split_inputs(example_inputs)
    was_training = pruned.training
    try:
        pruned.eval()
        masked.eval()
        with torch.no_grad():
            ref = masked(*args, **kwargs)
            got = pruned(*args, **kwargs)
    finally:
        pruned.train(was_training)
    worst, where = 0.0, ""
    for path, a, b in _pairs(ref, got, ""):
        if a.shape != b.shape:
            raise PruningMismatchError(
                f"verify_pruning(): output {path or '<output>'} has shape "
                f"{tuple(b.shape)} after pruning, {tuple(a.shape)} before."
            )
        if a.is_floating_point() and a.numel():
            diff = (a.double() - b.double()).abs().max().item()
            if diff > worst:
                worst, where = diff, path
        elif not torch.equal(a, b):
            raise PruningMismatchError(f"verify_pruning(): integer output {path or '<output>'} changed.")
    if worst > atol:
        raise PruningMismatchError(
            f"verify_pruning(): pruned model differs from the masked original by {worst:.3g} > atol={atol:g} "
            f"at output {where or '<output>'}; a rule or the surgery is wrong for one of the groups "
            f"{sorted(str(k if isinstance(k, str) else k.id) for k in plan)}."
        )
    return worst


def _pairs(a: Any, b: Any, path: str) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor):
            raise PruningMismatchError(
                f"verify_pruning(): output {path or '<output>'} is a tensor before "
                f"pruning and {type(b).__name__} after."
            )
        yield path, a, b
    elif isinstance(a, Mapping):
        for k in a:
            yield from _pairs(a[k], b[k], f"{path}.{k}" if path else str(k))
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _pairs(x, y, f"{path}[{i}]")


def _names(model: nn.Module, ignored: Iterable[str | nn.Module]) -> list[str]:
    """Module objects of ``model`` -> names, so they resolve inside its deep copy."""
    by_module = {m: n for n, m in model.named_modules()}
    return [by_module.get(i, i) if isinstance(i, nn.Module) else i for i in ignored]  # type: ignore[misc]
