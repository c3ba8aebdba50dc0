"""Check the core guarantee: the pruned model equals the original with removed units zeroed at consumers."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.graph.dependency import Plan
from torchpare.prune.graph.trace import _split_inputs
from torchpare.prune.surgery import apply_plan

__all__ = [
    "PruningMismatchError",
    "PrunedForwardError",
    "mask_like_plan",
    "verify_pruning",
    "check_runs",
    "breaking_groups",
    "pruned_forward_errors",
]


class PruningMismatchError(ValueError):
    """The pruned model's outputs differ from the masked original's."""


class PrunedForwardError(ValueError, RuntimeError):
    """A pruned model (or a trial of a plan) fails its forward on the example inputs.

    The message names the groups whose removal was applied and the original error (chained as
    ``__cause__``). Also a ``RuntimeError``, which :meth:`DependencyGraph.prune` raised before.
    """


def _forward(model: nn.Module, example_inputs: Any) -> Any:
    args, kwargs = _split_inputs(example_inputs)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return model(*args, **kwargs)
    finally:
        model.train(was_training)


def _fix_hint() -> str:
    return (
        "A size its forward reads from a config or a hard-coded int (e.g. a reshape to "
        "config.hidden_size) or a kernel's alignment (grouped matmuls: round_to=8) did not follow the "
        "pruning: add those modules to `ignored`, pass round_to, or register a rule for them "
        "(docs/design/pruning.md)."
    )


@contextlib.contextmanager
def pruned_forward_errors(groups: Iterable[str], who: str = "prune()") -> Iterator[None]:
    """Turn an error raised by a pruned model's forward into :class:`PrunedForwardError` naming ``groups``.

    Errors that already are ``PrunedForwardError``, ``KeyError`` or ``TypeError`` pass unchanged.

    Example:
        >>> try:
        ...     with pruned_forward_errors(["fc1"]):
        ...         raise RuntimeError("shape '[2, -1, 64]' is invalid")
        ... except PrunedForwardError as err:
        ...     print(str(err)[:65])
        prune(): the model fails its forward after pruning groups ['fc1']
    """
    try:
        yield
    except (PrunedForwardError, KeyError, TypeError):
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise PrunedForwardError(
            f"{who}: the model fails its forward after pruning groups {sorted(groups)} "
            f"({type(exc).__name__}: {exc}). {_fix_hint()}"
        ) from exc


def check_runs(
    model: nn.Module, example_inputs: Any, groups: Iterable[str] = (), who: str = "prune()"
) -> None:
    """Run ``model`` once on ``example_inputs`` (eval mode, no grad; mode restored).

    Args:
        model: a (pruned) model.
        example_inputs: a tensor, a tuple of positional arguments, or a dict of keyword arguments.
        groups: ids of the pruned groups, named in the error.
        who: the caller, named in the error.

    Raises:
        PrunedForwardError: the forward raised (its error is chained).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> check_runs(nn.Linear(3, 2), torch.randn(1, 3))
        >>> try:
        ...     check_runs(nn.Linear(3, 2), torch.randn(1, 4), groups=["0"])
        ... except PrunedForwardError as err:
        ...     print(str(err)[:63])
        prune(): the model fails its forward after pruning groups ['0']
    """
    with pruned_forward_errors(groups, who):
        _forward(model, example_inputs)


def breaking_groups(
    graph: DependencyGraph, example_inputs: Any, plan: Mapping[str, list[int]], who: str = "prune()"
) -> set[str]:
    """Groups of ``plan`` whose removal alone makes a copy of ``graph.model`` fail its forward.

    One trial runs the whole plan on a deep copy; only if it fails, halves of the plan are tried
    (bisection), so a model that prunes cleanly costs one forward. Each breaking group is reported in
    a ``UserWarning`` with the error, so ``prune()`` can leave it out instead of returning a model
    that does not run. If the plan fails as a whole but no part fails alone, all its groups are
    returned.

    Args:
        graph: the model's graph (its model is not modified).
        example_inputs: inputs to run the trials on.
        plan: ``{group id: unit indices to remove}``.
        who: the caller, named in the warnings.

    Returns:
        The ids of the breaking groups (empty when the whole plan runs).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.prune.graph import DependencyGraph
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> g = DependencyGraph.build(net, torch.randn(1, 4))
        >>> breaking_groups(g, torch.randn(1, 4), {"0": [0, 1]})
        set()
    """

    def error_of(gids: list[str]) -> BaseException | None:
        trial = copy.copy(graph)
        trial.model = copy.deepcopy(graph.model)
        try:
            apply_plan(trial, trial.normalize_plan({g: plan[g] for g in gids}))
            _forward(trial.model, example_inputs)
        except (RuntimeError, ValueError, IndexError) as exc:
            return exc
        return None

    def search(gids: list[str], err: BaseException) -> dict[str, BaseException]:
        if len(gids) == 1:
            return {gids[0]: err}
        half = len(gids) // 2
        found: dict[str, BaseException] = {}
        for part in (gids[:half], gids[half:]):
            part_err = error_of(part)
            if part_err is not None:
                found.update(search(part, part_err))
        return found or dict.fromkeys(gids, err)

    gids = [g for g, idx in plan.items() if idx]
    if not gids:
        return set()
    first = error_of(gids)
    if first is None:
        return set()
    broken = search(gids, first)
    for gid, err in broken.items():
        warnings.warn(
            f"{who}: removing units of group {gid!r} makes the model fail its forward "
            f"({type(err).__name__}: {str(err)[:300]}); the group is left unpruned. {_fix_hint()}",
            UserWarning,
            stacklevel=3,
        )
    return set(broken)


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
    rtol: float = 1e-5,
) -> float:
    """Compare ``pruned`` with ``original`` masked by ``plan`` (eval mode) and return the max abs diff.

    The tolerance is scaled to each output: output ``y`` passes when ``max|y_pruned - y_masked| <=
    atol + rtol * max|y_masked|``. Float rounding grows with the magnitude of what is summed, so a
    deep network whose outputs reach 1e12 legitimately differs by far more than 1e-5 in absolute
    terms (torchvision ResNet-152: 9.8e-4, a relative error of 7.8e-7) while a wrong rule differs by
    the order of the outputs themselves.

    Args:
        original: the model before pruning (not modified).
        pruned: the model after ``graph.prune(plan)``.
        example_inputs: inputs for both models (tensor, tuple, or dict of kwargs).
        plan: the plan that was applied, keyed by the original graph's group ids.
        atol: absolute part of the tolerance.
        ignored: as used to build the graph.
        rtol: relative part of the tolerance, times the largest magnitude of each output.

    Returns:
        The largest absolute difference over all floating output tensors.

    Raises:
        PruningMismatchError: a difference above the tolerance or an output of another shape (names
            the output path, e.g. ``logits`` or ``[0]``).
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
    worst = 0.0
    failed: tuple[float, float, str] | None = None
    for path, a, b in _pairs(ref, got, ""):
        if a.shape != b.shape:
            raise PruningMismatchError(
                f"verify_pruning(): output {path or '<output>'} has shape "
                f"{tuple(b.shape)} after pruning, {tuple(a.shape)} before."
            )
        if a.is_floating_point() and a.numel():
            diff = (a.double() - b.double()).abs().max().item()
            allowed = atol + rtol * a.double().abs().max().item()
            worst = max(worst, diff)
            if diff > allowed and (failed is None or diff - allowed > failed[0] - failed[1]):
                failed = (diff, allowed - atol, path)
        elif not torch.equal(a, b):
            raise PruningMismatchError(f"verify_pruning(): integer output {path or '<output>'} changed.")
    if failed is not None:
        diff, scaled, path = failed
        raise PruningMismatchError(
            f"verify_pruning(): pruned model differs from the masked original by {diff:.3g} > atol={atol:g} "
            f"+ rtol * largest output magnitude = {scaled:.3g} (rtol={rtol:g}) at output "
            f"{path or '<output>'}; a rule or the surgery is wrong for one of the groups "
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
