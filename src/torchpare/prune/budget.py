"""Prune a model to a FLOPs or parameter budget: :func:`prune` and its :class:`PruneSummary`.

(Formerly ``torchpare.prune.target``, which still works with a ``FutureWarning``.) Every step is
applied through :func:`torchpare.prune.surgery.apply_plan`, the one surgery entry point, and recorded.

Each step scores every prunable group with an importance criterion, then searches (bisection) how
many of the lowest-scored units to remove so that the pruned model's FLOPs (or parameters), counted
on the example inputs, land on the step's goal. The search ranks candidates with the analytic cost of
a plan (:class:`~torchpare.prune.plan_cost.PlanCost`: no trial copy, no forward) and counts the chosen
plan for real once; only a count that misses where the estimate is not exact costs more real counts
(:func:`_checked_search`). Global pruning ranks the units of all groups together
(scores are normalised per group); per-layer pruning removes the same fraction of every group.
``iterative_steps > 1`` re-scores between steps and approaches the target geometrically in FLOPs.
With ``bn_calibration`` batches, BatchNorm running statistics are re-estimated after every step
(:func:`~torchpare.prune.calibrate.recalibrate_bn`): the removed channels change what the next
BatchNorm layers see, and stale statistics can drop a pruned network to chance before any training.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import torchpare.prune.calibrate as _calibrate
from torchpare.prune.by_plan import prune_by_plan
from torchpare.prune.counting import count, meta_copy, meta_inputs, module_channels, on_meta
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.graph.placement import check_placement
from torchpare.prune.graph.report import matches_units
from torchpare.prune.hf_pretrained import warn_if_not_plain
from torchpare.prune.history import begin_record
from torchpare.prune.ignored import resolve_ignored
from torchpare.prune.importance import build_importance
from torchpare.prune.moe_experts import fuse_experts, split_experts
from torchpare.prune.plan_cost import ModuleFlops, PlanCost, count_by_module
from torchpare.prune.rules.hf_config import sync_hf_config
from torchpare.prune.surgery import apply_plan
from torchpare.prune.verify import breaking_groups, pruned_forward_errors
from torchpare.prune.widths import AUTO_ROUND_TO, auto_round_to

__all__ = ["prune", "prune_config_errors", "PruneSummary", "MetaWeightsError", "auto_round_to", "AUTO_ROUND_TO"]


@dataclass
class PruneSummary:
    """What :func:`prune` did.

    Attributes:
        target: ``"flops"`` or ``"params"``.
        target_ratio: The requested ratio of the original metric.
        flops_before, flops_after, params_before, params_after: Counts on the example inputs.
        layers: ``{module_name: {"before": (in, out), "after": (in, out)}}`` of every module touched.
        groups: ``{group_id: (units_before, units_after)}``.
        plans: The applied plans (group id -> removed unit indices), in application order.
        within_tolerance: Whether the achieved ratio is within ``tolerance`` of the target.
        bn_recalibrated: Whether BatchNorm statistics were re-estimated (``bn_calibration``).
    """

    target: str
    target_ratio: float
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    layers: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    plans: list[dict[str, list[int]]] = field(default_factory=list)
    within_tolerance: bool = True
    bn_recalibrated: bool = False
    ignored: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def flops_ratio(self) -> float:
        """FLOPs after / before."""
        return self.flops_after / max(self.flops_before, 1)

    @property
    def params_ratio(self) -> float:
        """Parameters after / before."""
        return self.params_after / max(self.params_before, 1)

    @property
    def achieved_ratio(self) -> float:
        """The ratio of the targeted metric."""
        return self.flops_ratio if self.target == "flops" else self.params_ratio

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "target": self.target,
            "target_ratio": self.target_ratio,
            "achieved_ratio": self.achieved_ratio,
            "flops": [self.flops_before, self.flops_after],
            "params": [self.params_before, self.params_after],
            "layers": {k: {kk: list(vv) for kk, vv in v.items()} for k, v in self.layers.items()},
            "groups": {k: list(v) for k, v in self.groups.items()},
            "plans": self.plans,
            "within_tolerance": self.within_tolerance,
            "bn_recalibrated": self.bn_recalibrated,
            "ignored": list(self.ignored),
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneSummary:
        """The summary :meth:`to_dict` wrote (e.g. a plan saved as JSON, to :meth:`apply` later).

        Raises:
            KeyError: a key :meth:`to_dict` writes is missing (names it).
        """
        missing = [k for k in ("target", "target_ratio", "flops", "params", "plans") if k not in data]
        if missing:
            raise KeyError(f"PruneSummary.from_dict(): missing {missing}; pass what to_dict() returned.")
        return cls(
            target=data["target"],
            target_ratio=float(data["target_ratio"]),
            flops_before=int(data["flops"][0]),
            flops_after=int(data["flops"][1]),
            params_before=int(data["params"][0]),
            params_after=int(data["params"][1]),
            layers={k: {kk: tuple(vv) for kk, vv in v.items()} for k, v in data.get("layers", {}).items()},
            groups={k: tuple(v) for k, v in data.get("groups", {}).items()},
            plans=[{g: [int(i) for i in idx] for g, idx in p.items()} for p in data["plans"]],
            within_tolerance=bool(data.get("within_tolerance", True)),
            bn_recalibrated=bool(data.get("bn_recalibrated", False)),
            ignored=list(data.get("ignored", [])),
            dry_run=bool(data.get("dry_run", False)),
        )

    def apply(self, model: nn.Module, example_inputs: Any) -> nn.Module:
        """Prune ``model`` in place with the planned steps (e.g. from ``prune(..., dry_run=True)``).

        Each step of :attr:`plans` goes through :func:`~torchpare.prune.prune_by_plan` (so through
        :func:`~torchpare.prune.surgery.apply_plan` and into the pruning record), with the
        :attr:`ignored` modules of the planning run; then, as at the end of :func:`prune`, experts that
        kept one width are fused again and Hugging Face configs are synced. The model
        must have the structure the plan was made on (a meta copy planned with ``dry_run`` has it).

        Args:
            model: The real model (pruned in place and returned).
            example_inputs: Inputs to trace it with (as for :func:`prune`).

        Returns:
            ``model``, pruned as planned.

        Raises:
            KeyError, ValueError: a plan that does not fit ``model`` (unknown group id, index out of
                range), as raised by :func:`~torchpare.prune.prune_by_plan`.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
            >>> _, plan = prune(net, torch.randn(2, 16), target_params_ratio=0.5, dry_run=True)
            >>> net[0].out_features
            32
            >>> plan.apply(net, torch.randn(2, 16))[0].out_features
            16
        """
        for step in self.plans:
            prune_by_plan(model, example_inputs, step, ignored=self.ignored)
        fuse_experts(model)  # as prune() ends: experts that kept one width get their fused layout back
        sync_hf_config(model)
        return model

    def table(self) -> str:
        """A plain-text per-layer table with the totals."""
        lines = [f"{'module':<40} {'in':>11} {'out':>11}"]
        for name, io in self.layers.items():
            (bi, bo), (ai, ao) = io["before"], io["after"]
            if (bi, bo) != (ai, ao):
                lines.append(f"{name:<40} {bi:>5}->{ai:<5} {bo:>5}->{ao:<5}")
        lines.append(
            f"FLOPs {self.flops_before:,} -> {self.flops_after:,} ({self.flops_ratio:.3f}); "
            f"params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.3f}); "
            f"target {self.target} {self.target_ratio:.3f}"
            + ("; BatchNorm statistics recalibrated" if self.bn_recalibrated else "")
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _round_keep(keep: int, size: int, round_to: int | None) -> int:
    """``keep`` rounded to the nearest multiple of ``round_to`` (at least one multiple); groups of at
    most ``round_to`` units are left whole, since no smaller multiple exists."""
    if not round_to:
        return keep
    if size <= round_to:
        return size
    rounded = int(round(keep / round_to)) * round_to
    return min(size, max(round_to, rounded))


def _unit_width(group: Any) -> int:
    """Channels one unit of ``group`` removes from its first member (1 when the group has none)."""
    members = getattr(group, "members", None) or ()
    for m in members:
        index_map = getattr(m, "index_map", None)
        if index_map:
            return max(1, len(index_map[0]))
    return 1


class _Planner:
    """Orders every removable unit once; the plan of size ``k`` removes the first ``k`` of that order.

    Global pruning orders units by their (per-group normalised) score; per-layer pruning by the
    fraction of its group a unit's removal reaches (``(rank + 1) / size``), so every group loses the
    same share, one unit at a time. Within a group, units always go lowest score first.

    Kept counts of channel groups are rounded to a per-group step: ``round_to`` when given, else
    (``round_to=None``) the multiple :func:`auto_round_to` picks from the group's width in channels.
    ``coarsen`` halves the automatic steps that many times (the search's fallback when the rounded
    widths cannot reach the target within its tolerance); an explicit ``round_to`` is always kept.
    """

    def __init__(
        self,
        scores: Mapping[str, torch.Tensor],
        groups: Mapping[str, Any],
        global_pruning: bool,
        round_to: int | None,
        max_group_ratio: float,
    ) -> None:
        self.groups, self.round_to, self.global_pruning = groups, round_to, global_pruning
        self.coarsen = 0
        self.auto_steps: dict[str, int] = {}
        if round_to is None:
            for gid in scores:
                g = groups[gid]
                if g.unit == "channel":
                    width = _unit_width(g)
                    self.auto_steps[gid] = max(1, auto_round_to(g.size * width) // width)
        self.order = {gid: torch.argsort(s, stable=True).tolist() for gid, s in scores.items()}
        self.cap: dict[str, int] = {}
        entries: list[tuple[float, str]] = []
        for gid, s in scores.items():
            size = groups[gid].size
            self.cap[gid] = cap = min(size - 1, int(math.floor(max_group_ratio * size)))
            for rank in range(cap):
                key = float(s[self.order[gid][rank]]) if global_pruning else (rank + 1) / size
                entries.append((key, gid))
        entries.sort(key=lambda e: e[0])  # stable: a group's units stay in rank order
        self.flat = [gid for _, gid in entries]
        self.keys = [key for key, _ in entries]
        self.total = len(self.flat)

    def stops(self) -> Sequence[int]:
        """The ``k`` the search may stop at: every ``k``, except that per-layer pruning under automatic
        rounding stops only where the order's key changes, so equal groups lose equal counts (and round
        to equal widths: a config can still state them)."""
        if self.global_pruning or not self.rounds_automatically:
            return range(self.total + 1)
        return [0] + [k for k in range(1, self.total + 1) if k == self.total or self.keys[k] != self.keys[k - 1]]

    @property
    def rounds_automatically(self) -> bool:
        """Whether some group's automatic step is still above 1 (so a finer ``coarsen`` level exists)."""
        return any(step >> self.coarsen > 1 for step in self.auto_steps.values())

    def counts(self, k: int) -> dict[str, int]:
        """Units removed per group by the first ``k`` of the order."""
        counts = dict.fromkeys(self.order, 0)
        for gid in self.flat[:k]:
            counts[gid] += 1
        return counts

    def step(self, gid: str) -> int:
        """Granularity of a group's count (``round_to``, or the automatic multiple, for channel groups)."""
        if self.round_to is not None:
            return self.round_to if self.groups[gid].unit == "channel" else 1
        return max(1, self.auto_steps.get(gid, 1) >> self.coarsen)

    def widest_plan(self) -> dict[str, list[int]]:
        """Every group cut as far as the search may go: at the multiples of the first search, and a
        group those leave whole (16 channels under a multiple of 16) at the finest level the fallback
        reaches, so the check for groups that break the forward sees every group the search may cut."""
        plan = self.plan(self.counts(self.total))
        if self.round_to is None:
            saved, self.coarsen = self.coarsen, 64
            try:
                finest = self.plan(self.counts(self.total))
            finally:
                self.coarsen = saved
            plan.update({gid: idx for gid, idx in finest.items() if gid not in plan})
        return plan

    def plan(self, counts: Mapping[str, int]) -> dict[str, list[int]]:
        """``{group id: lowest-scored unit indices}`` removing (about) ``counts[gid]`` units each."""
        plan = {}
        for gid, n in counts.items():
            size, step = self.groups[gid].size, self.step(gid)
            if step > 1:
                keep = _round_keep(size - n, size, step)
                if self.round_to is None and keep < size - self.cap[gid]:
                    # the automatic default never removes more than max_group_ratio allows: round up
                    keep = min(size, -(-(size - self.cap[gid]) // step) * step)
                n = min(size - keep, size - 1)
            else:
                n = min(n, self.cap[gid])
            n = max(0, n)
            if n > 0:
                plan[gid] = sorted(self.order[gid][:n])
        return plan


def _search(
    planner: _Planner, goal: float, tolerance: float, metric_of: Callable[[Mapping[str, list[int]]], float]
) -> dict[str, list[int]]:
    """The plan whose metric is closest to ``goal``.

    Bisection finds the smallest ``k`` reaching the goal along the planner's order (the metric falls
    as ``k`` grows) and keeps the closer of ``k`` and ``k - 1``. If that misses the tolerance (coarse
    groups), a short greedy search moves single units (or ``round_to`` steps) of one group at a time
    while that brings the metric closer. If the automatically rounded widths (``round_to=None``) still
    miss the tolerance, the search is repeated with the steps halved (16, 8, 4, 2, then exact counts) until
    a plan meets it, keeping the closest plan: the default rounding never costs the target.
    """
    cache: dict[tuple[tuple[str, int], ...], tuple[float, dict[str, list[int]]]] = {}

    def evaluate(counts: Mapping[str, int]) -> float:
        plan = planner.plan(counts)
        key = tuple(sorted((gid, len(idx)) for gid, idx in plan.items()))
        if key not in cache:
            cache[key] = (metric_of(plan), plan)
        return cache[key][0]

    def search_once() -> tuple[float, dict[str, list[int]]]:
        stops = planner.stops()
        lo, hi = 0, len(stops) - 1
        best = planner.counts(0)
        if evaluate(planner.counts(stops[hi])) <= goal:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if evaluate(planner.counts(stops[mid])) <= goal:
                    hi = mid
                else:
                    lo = mid
            best = min(
                (planner.counts(stops[lo]), planner.counts(stops[hi])), key=lambda c: abs(evaluate(c) - goal)
            )
        else:
            best = planner.counts(stops[hi])
        err = abs(evaluate(best) - goal)
        # Per-layer pruning keeps equal groups equal: moving one group's count is the last resort, tried
        # only at the finest level the automatic rounding reaches (a finer level is tried first).
        greedy_rounds = 0 if not planner.global_pruning and planner.rounds_automatically else 4 * len(best)
        for _ in range(greedy_rounds):
            if err <= tolerance * goal:
                break
            candidates = []
            for gid in best:
                for delta in (planner.step(gid), -planner.step(gid)):
                    n = best[gid] + delta
                    if 0 <= n < planner.groups[gid].size:
                        candidates.append({**best, gid: n})
            scored = [(abs(evaluate(c) - goal), c) for c in candidates]
            if not scored or min(e for e, _ in scored) >= err:
                break
            err, best = min(scored, key=lambda t: t[0])
        return err, planner.plan(best)

    err, plan = search_once()
    try:
        while err > tolerance * goal and planner.rounds_automatically:
            planner.coarsen += 1
            try:
                finer_err, finer_plan = search_once()
            except (ValueError, RuntimeError):  # finer widths break a kernel the rounded ones suit
                break
            if finer_err < err:
                err, plan = finer_err, finer_plan
    finally:
        planner.coarsen = 0
    return plan


# How many plans the estimate-driven search counts for real before it falls back to searching with
# real counts (the behaviour before issue 18).
_EXACT_CHECKS = 4


def _checked_search(
    planner: _Planner,
    goal: float,
    tolerance: float,
    estimate: Callable[[Mapping[str, list[int]]], float],
    exact: Callable[[Mapping[str, list[int]]], float],
    estimate_is_exact: bool = False,
) -> dict[str, list[int]]:
    """:func:`_search` on the analytic ``estimate`` (:class:`~torchpare.prune.plan_cost.PlanCost`),
    with the chosen plan counted for real once.

    The plan is returned after that one real count if it meets the tolerance, or if the estimate is
    exact (``estimate_is_exact``, and the count equals the estimate): a search on real counts would
    stop at the same plan. Otherwise the search is aimed again where the real counts say the goal
    lies (first scaled by the observed ratio ``goal x estimate / real``, then along the secant of
    the last two counted plans), up to :data:`_EXACT_CHECKS` real counts. If none meets the
    tolerance, a correction lands on a plan already counted, or a counted plan fails its forward,
    the search runs on real counts as before issue 18 (a trial copy and a forward per candidate) and
    the closer of its plan and the best counted one is returned.
    """
    aim = goal
    counted: dict[tuple[tuple[str, int], ...], float] = {}
    best: tuple[float, dict[str, list[int]]] | None = None

    def real(plan: Mapping[str, list[int]]) -> float:  # each plan is copied and counted once
        key = tuple(sorted((gid, len(idx)) for gid, idx in plan.items()))
        if key not in counted:
            counted[key] = exact(plan)
        return counted[key]

    points: list[tuple[float, float]] = []  # (estimate, real count) of each counted plan
    for attempt in range(_EXACT_CHECKS):
        plan = _search(planner, aim, tolerance, estimate)
        key = tuple(sorted((gid, len(idx)) for gid, idx in plan.items()))
        if key in counted:  # the corrected aim leads back to a counted plan
            break
        try:
            achieved = real(plan)
        except (ValueError, RuntimeError):  # e.g. finer widths that break a kernel: search as before
            break
        if best is None or abs(achieved - goal) < abs(best[0] - goal):
            best = (achieved, plan)
        predicted = estimate(plan)
        if abs(achieved - goal) <= tolerance * goal:
            return plan
        if attempt == 0 and estimate_is_exact and predicted == achieved:
            return plan
        points.append((predicted, achieved))
        aim = _next_aim(points, goal)
        if aim is None:
            break
    plan = _search(planner, goal, tolerance, real)
    if best is not None and abs(best[0] - goal) < abs(real(plan) - goal):
        return best[1]
    return plan


def _next_aim(points: Sequence[tuple[float, float]], goal: float) -> float | None:
    """The estimate at which the real count should reach ``goal``: the last ``(estimate, real)``
    point scaled, or the secant through the last two; ``None`` when they give no usable slope."""
    (e1, r1) = points[-1]
    if len(points) > 1:
        e0, r0 = points[-2]
        if e1 != e0 and (r1 - r0) / (e1 - e0) > 0:
            return min(1.0, e1 + (goal - r1) * (e1 - e0) / (r1 - r0))
    if e1 <= 0 or r1 <= 0:
        return None
    return min(1.0, goal * e1 / r1)


# Arguments of prune() that a caller passes itself, not from a settings mapping.
_CALLER_ARGUMENTS = ("model", "example_inputs")


def _argument_problems(
    target_flops_ratio: Any,
    target_params_ratio: Any,
    iterative_steps: Any = 1,
    max_group_ratio: Any = 0.8,
    round_to: Any = None,
) -> list[tuple[str, str]]:
    """prune()'s checks of its scalar arguments, as ``(argument, message)`` pairs (``""``: no single one)."""
    problems: list[tuple[str, str]] = []
    if (target_flops_ratio is None) == (target_params_ratio is None):
        problems.append(("", "give exactly one of target_flops_ratio or target_params_ratio."))
    for key, value in (("target_flops_ratio", target_flops_ratio), ("target_params_ratio", target_params_ratio)):
        if value is None:
            continue
        ratio = _as_number(value)
        if ratio is None or not 0.0 < ratio <= 1.0:
            problems.append((key, f"must be in (0, 1], got {value if ratio is None else ratio}."))
    if not _is_int(iterative_steps) or iterative_steps < 1:
        problems.append(("iterative_steps", f"must be >= 1, got {iterative_steps}."))
    group_ratio = _as_number(max_group_ratio)
    if group_ratio is None or not 0.0 < group_ratio < 1.0:
        problems.append(("max_group_ratio", f"must be in (0, 1), got {max_group_ratio}."))
    if round_to is not None and (not _is_int(round_to) or round_to < 1):
        problems.append(("round_to", f"must be a positive int or None, got {round_to}."))
    return problems


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def prune_config_errors(cfg: Any) -> list[tuple[str, str]]:
    """Every problem with a mapping of :func:`prune` keyword arguments (a config's ``pruner`` section),
    found before any model is built: the checks ``prune()`` itself runs, plus unknown argument names,
    the importance criterion and the unit kinds.

    Args:
        cfg: ``{argument: value}`` without ``model`` and ``example_inputs`` (the caller passes those).

    Returns:
        ``(argument, message)`` pairs, empty when ``prune(model, example_inputs, **cfg)`` accepts the
        arguments; ``argument`` is ``""`` for a problem of the whole mapping. A caller adds its key path.

    Example:
        >>> prune_config_errors({"target_flops_ratio": 1.5, "importance": "l1"})
        [('target_flops_ratio', 'must be in (0, 1], got 1.5.')]
        >>> [key for key, _ in prune_config_errors({"target_flop_ratio": 0.5, "importance": "l7"})]
        ['target_flop_ratio', '', 'importance']
    """
    import inspect

    from torchpare._utils import did_you_mean
    from torchpare.prune.graph.report import UNIT_KINDS

    if not isinstance(cfg, Mapping):
        return [("", f"must be a mapping of prune() arguments, got {type(cfg).__name__}")]
    params = inspect.signature(prune).parameters
    accepted = [name for name in params if name not in _CALLER_ARGUMENTS]
    problems = [
        (str(k), f"unknown argument{did_you_mean(str(k), accepted)}; valid: {', '.join(accepted)}")
        for k in cfg
        if k not in accepted
    ]
    given = {name: cfg.get(name, params[name].default) for name in accepted}
    problems += _argument_problems(
        given["target_flops_ratio"],
        given["target_params_ratio"],
        given["iterative_steps"],
        given["max_group_ratio"],
        given["round_to"],
    )
    try:
        build_importance(given["importance"])
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(("importance", str(exc.args[0] if exc.args else exc)))
    units = given["units"]
    if units is not None:
        kinds = [units] if isinstance(units, str) else list(units) if isinstance(units, list | tuple) else None
        unknown = None if kinds is None else [u for u in kinds if u not in UNIT_KINDS]
        if kinds is None or unknown:
            problems.append(("units", f"unknown unit kind(s) {unknown or units!r}; use some of {UNIT_KINDS}."))
    return problems


def prune(
    model: nn.Module,
    example_inputs: Any,
    importance: str | Mapping[str, Any] | Any = "l1",
    target_flops_ratio: float | None = None,
    target_params_ratio: float | None = None,
    global_pruning: bool = True,
    round_to: int | None = None,
    ignored: Iterable[str | nn.Module] | None = None,
    except_start_keys: Sequence[str] | None = None,
    iterative_steps: int = 1,
    max_group_ratio: float = 0.8,
    units: Sequence[str] | None = None,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    batch_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    tolerance: float = 0.02,
    bn_calibration: Iterable[Any] | None = None,
    dry_run: bool = False,
) -> tuple[nn.Module, PruneSummary]:
    """Prune ``model`` in place until its FLOPs (or parameters) reach a ratio of the original.

    Args:
        model: The model (pruned in place and returned).
        example_inputs: Inputs to trace and to count FLOPs with (tensor, tuple, or dict of kwargs).
        importance: A registered criterion name (``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"``,
            ``"fisher"``, ``"random"``), a config dict, or a ``GroupImportance`` instance.
        target_flops_ratio: Keep this fraction of the FLOPs (exactly one target must be given).
        target_params_ratio: Keep this fraction of the parameters.
        global_pruning: Rank units of all groups together (``True``) or prune each group by the same
            fraction (``False``).
        round_to: Keep channel counts multiples of this (heads are never rounded; groups of at most
            ``round_to`` channels stay whole). ``None`` (default): a multiple chosen from each group's
            width (:func:`auto_round_to`: 16 for groups of >= 16 channels, 4 for >= 8, exact below),
            so the pruned model runs about as fast as its FLOPs promise; if those widths
            cannot reach the target within ``tolerance``, halved multiples (down to exact counts) are
            searched instead.
            ``round_to=1``: exact counts.
        ignored: Module names (or modules) whose output channels are not pruned.
        except_start_keys: Prefixes of module names excluded as well.
        iterative_steps: Number of prune/re-score rounds (1 = one-shot).
        max_group_ratio: At most this fraction of any group is removed (at least one unit stays).
        units: Only prune groups of these unit kinds; default all. ``"head"``, ``"kv_head"``: attention
            heads; ``"hidden"``: the residual width of a transformer; ``"ffn"``: every other channel
            group (MLP and expert hidden units); ``"channel"``: all channel groups. E.g.
            ``("head", "kv_head", "ffn")`` keeps the hidden width. See docs/pruning.md.
        data: Calibration batches for data-dependent criteria (Taylor, Fisher); must be re-iterable
            when ``iterative_steps > 1``. Dict batches with ``labels`` need neither ``loss_fn`` nor
            ``batch_loss``.
        loss_fn: ``loss_fn(outputs, targets)`` for ``(inputs, targets)`` batches in ``data``.
        batch_loss: ``batch_loss(model, batch)``, for any other batch layout in ``data``.
        tolerance: Relative tolerance on the target; a warning is issued when it cannot be met.
        bn_calibration: Batches (same layouts as ``data``; targets are ignored) to re-estimate every
            BatchNorm layer's running statistics with after each step, so that scoring between steps
            and the returned model see statistics that fit the pruned channels; see
            :func:`~torchpare.prune.calibrate.recalibrate_bn`. Must be re-iterable when
            ``iterative_steps > 1``. ``None`` (default) leaves the statistics as trained.
        dry_run: Plan only: ``model`` is left untouched and the search runs on a ``meta`` copy of it
            (no weights copied); ``summary.plans`` and the counts describe the pruned model, and
            ``summary.apply(real_model, example_inputs)`` prunes later. Works on a model on the
            ``meta`` device with a criterion that reads no weights (``"random"`` or your own
            ``GroupImportance`` returning precomputed scores); ``bn_calibration`` is refused. See
            docs/pruning.md, "Planning without copies".

    Returns:
        ``(model, summary)``; the model carries its pruning record, so ``save_pruned`` works.
        With ``dry_run`` the model is returned unchanged.

    Raises:
        ValueError: no target or both targets, a ratio outside ``(0, 1]``, bad steps/limits, no
            prunable group, an unknown unit kind, or ``bn_calibration`` for a model without BatchNorm
            running statistics.
        PrunedForwardError: a pruned model (or a trial) fails its forward in a way no single group
            explains (a ``ValueError`` and ``RuntimeError``; names the groups). Groups whose removal
            alone breaks the forward are left out with a warning instead.
        IgnoredModuleError: an ``ignored`` entry or ``except_start_keys`` prefix that is no module of
            ``model`` (also a ``ValueError``; names the closest module names).
        MetaWeightsError: (a ``ValueError``) a criterion that reads weights or data on a model on the
            ``meta`` device, or a ``dry_run`` that needs real weights (``iterative_steps > 1`` with
            such a criterion, ``bn_calibration``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> net, summary = prune(net, torch.randn(2, 16), target_params_ratio=0.5)
        >>> net[0].out_features, round(summary.params_ratio, 2)
        (16, 0.5)
    """
    who = "prune()"
    for key, message in _argument_problems(
        target_flops_ratio, target_params_ratio, iterative_steps, max_group_ratio, round_to
    ):
        raise ValueError(f"{who}: {key + ' ' if key else ''}{message}")
    check_placement(model, who)  # DDP/FSDP wrappers, meta weights next to real ones: say the fix first
    target = "flops" if target_flops_ratio is not None else "params"
    ratio = float(target_flops_ratio if target_flops_ratio is not None else target_params_ratio)  # type: ignore[arg-type]
    if bn_calibration is not None and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules()
    ):
        raise ValueError(
            f"{who}: bn_calibration was given but {type(model).__name__} has no BatchNorm layer with "
            "running statistics; drop bn_calibration."
        )
    imp = build_importance(importance)
    _check_meta_planning(model, imp, dry_run, iterative_steps, bn_calibration, who)
    names = sorted(resolve_ignored(model, ignored, except_start_keys, who))

    # Counting and tracing run forward passes: eval mode keeps BatchNorm statistics untouched.
    was_training = model.training
    model.eval()
    try:
        return _prune_eval(
            model,
            example_inputs,
            imp,
            target,
            ratio,
            names,
            global_pruning,
            round_to,
            iterative_steps,
            max_group_ratio,
            units,
            data,
            loss_fn,
            batch_loss,
            tolerance,
            bn_calibration,
            dry_run,
        )
    finally:
        model.train(was_training)


def _prune_eval(
    model: nn.Module,
    example_inputs: Any,
    imp: Any,
    target: str,
    ratio: float,
    names: list[str],
    global_pruning: bool,
    round_to: int | None,
    iterative_steps: int,
    max_group_ratio: float,
    units: Sequence[str] | None,
    data: Iterable[Any] | None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    batch_loss: Callable[[nn.Module, Any], torch.Tensor] | None,
    tolerance: float,
    bn_calibration: Iterable[Any] | None = None,
    dry_run: bool = False,
) -> tuple[nn.Module, PruneSummary]:
    who = "prune()"
    user_model = model
    scorer: nn.Module | None = None  # where scores are read when ``model`` is a meta work copy
    if dry_run and not on_meta(model):
        # Trace and count the real model (value checks such as the attention-head probe need real
        # values; tracing changes nothing), then plan on a meta work copy of it: same names, same ids.
        by_module: ModuleFlops | None = count_by_module(model, example_inputs)
        before = by_module.totals
        graph = DependencyGraph.build(model, example_inputs, ignored=tuple(names))
        scorer, model, example_inputs = model, *_dry_run_copy(model, example_inputs, before, who)
        graph = copy.copy(graph)
        graph.model, graph.example_inputs = model, example_inputs
    else:
        if on_meta(model) or dry_run:
            if dry_run:
                model = meta_copy(model)
            example_inputs = meta_inputs(example_inputs)
        else:  # MoE: each expert's hidden units a group of its own (moe_experts.py), recorded
            begin_record(model, example_inputs)
            split_experts(model, skip=names, warn=True)
        by_module = _meta_safe(lambda: count_by_module(model, example_inputs), model, who)
        before = by_module.totals
        graph = _meta_safe(
            lambda: DependencyGraph.build(model, example_inputs, ignored=tuple(names)), model, who
        )
    base = before[target]
    raw = {n: module_channels(m) for n, m in model.named_modules() if n}
    begin_record(model, example_inputs)
    sizes_before = {g.id: g.size for g in graph.groups()}
    plans: list[dict[str, list[int]]] = []
    pruned_sizes: dict[str, int] = {}  # group sizes after a last step that was not re-traced

    shadow: tuple[nn.Module, Any] = (model, example_inputs)
    # Real counts of plans of the current step, with their per-module FLOPs: the chosen plan's are
    # the next step's starting point, so an iterative step needs no separate count.
    counted: dict[tuple[tuple[str, int], ...], ModuleFlops] = {}

    def metric_of(plan: Mapping[str, list[int]]) -> float:
        trial_model, trial_inputs = shadow
        key = tuple(sorted((gid, len(idx)) for gid, idx in plan.items()))
        if not plan:
            counted[key] = count_by_module(trial_model, trial_inputs)
            return counted[key].totals[target] / base
        # A shallow graph copy over a deep copy of the shadow model (a meta copy when counting on
        # meta reproduces the real counts, so no trial copies real weights): the surgery only reads
        # the graph's groups and slices, and counting the trial needs no re-trace, so no trial pays
        # for a trace or for copying the graph's index maps.
        trial = copy.copy(graph)
        trial.model = copy.deepcopy(trial_model)
        with pruned_forward_errors(plan, who):
            apply_plan(trial, plan)
            counted[key] = count_by_module(trial.model, trial_inputs)
            return counted[key].totals[target] / base

    for step in range(1, iterative_steps + 1):
        goal = ratio ** (step / iterative_steps) if iterative_steps > 1 else ratio
        groups = {g.id: g for g in graph.groups() if matches_units(graph, g, units)}
        if not groups:
            raise ValueError(f"{who}: no prunable group (units={units}).\n{graph.report()}")
        shadow = _shadow(model, example_inputs, before if step == 1 else None)
        scoring = scorer if scorer is not None and step == 1 else model
        if imp.requires_data:
            imp.prepare(scoring, data, loss_fn=loss_fn, batch_loss=batch_loss, graph=graph)
        scores = {}
        for gid, g in groups.items():
            try:
                s = imp(scoring, g)
            except (NotImplementedError, RuntimeError) as exc:  # "Cannot copy out of meta tensor"
                if on_meta(scoring):
                    raise MetaWeightsError(_meta_criterion_message(imp, model, who)) from exc
                raise
            if s is not None:
                if s.is_meta:
                    raise MetaWeightsError(_meta_criterion_message(imp, model, who))
                scores[gid] = s
        if not scores:
            raise ValueError(
                f"{who}: criterion {type(imp).__name__} scored no group of {type(model).__name__}."
            )
        planner = _Planner(scores, groups, global_pruning, round_to, max_group_ratio)
        trial_graph = copy.copy(graph)
        trial_graph.model = shadow[0]
        broken = breaking_groups(trial_graph, shadow[1], planner.widest_plan(), who)
        if broken:  # never return a model that does not run: leave those groups out (warned)
            scores = {gid: s for gid, s in scores.items() if gid not in broken}
            planner = _Planner(scores, groups, global_pruning, round_to, max_group_ratio)
        if by_module is None:  # the previous step's plan was not counted with its breakdown
            by_module = count_by_module(*shadow)
        cost = PlanCost(graph, by_module)
        counted.clear()

        def estimate(plan: Mapping[str, list[int]], cost: PlanCost = cost) -> float:
            return cost(plan)[target] / base

        best_plan = _checked_search(
            planner,
            goal,
            tolerance if step == iterative_steps else 0.25 * tolerance,
            estimate,
            metric_of,
            estimate_is_exact=target == "params" or cost.exact_flops,
        )
        by_module = counted.get(tuple(sorted((gid, len(idx)) for gid, idx in best_plan.items())))
        if best_plan:
            # The last step needs no re-trace: nothing reads the graph after it but the group sizes,
            # which the plan gives; the count of the pruned model below is its forward check.
            last = step == iterative_steps
            sizes_now = {gid: graph.group(gid).size - len(idx) for gid, idx in best_plan.items()}
            with pruned_forward_errors(best_plan, who):
                apply_plan(graph, best_plan, retrace=not last, record=True)
            if last:
                pruned_sizes.update(sizes_now)
            plans.append(best_plan)
            if bn_calibration is not None:
                _calibrate.recalibrate_bn(model, bn_calibration)

    fuse_experts(model)  # experts that kept one width get their fused layout back (moe_experts.py)
    sync_hf_config(model)
    with pruned_forward_errors(sorted({gid for p in plans for gid in p}), who):
        after = count(model, example_inputs)  # its forward is also the check that the pruned model runs
    warn_if_not_plain(model, who)  # Hugging Face models whose widths their config cannot state
    achieved = after[target] / base
    within = abs(achieved - ratio) <= tolerance * ratio
    if not within:
        warnings.warn(
            f"{who}: reached {target} ratio {achieved:.4f}, not within {tolerance:.0%} of the target "
            f"{ratio:.4f}: {len(sizes_before)} prunable groups, max_group_ratio={max_group_ratio}, "
            f"round_to={round_to}. Raise max_group_ratio, pass round_to=1 (exact counts), or read "
            "DependencyGraph.build(model, example_inputs).report() for the groups that are blocked.",
            stacklevel=2,
        )
    layers = {}
    for name, m in model.named_modules():
        if name and raw.get(name) is not None:
            now = module_channels(m)
            if now is not None:
                layers[name] = {"before": raw[name], "after": now}
    sizes_after = {g.id: g.size for g in graph.all_groups()} | pruned_sizes
    summary = PruneSummary(
        target=target,
        target_ratio=ratio,
        flops_before=before["flops"],
        flops_after=after["flops"],
        params_before=before["params"],
        params_after=after["params"],
        layers=layers,
        groups={gid: (n, sizes_after.get(gid, n)) for gid, n in sizes_before.items()},
        plans=plans,
        within_tolerance=within,
        bn_recalibrated=bn_calibration is not None and bool(plans),
        ignored=list(names),
        dry_run=dry_run,
    )
    return user_model, summary


# Trials (candidate plans of the target search, the breaking-group check) run on a meta copy of the
# model when counting there reproduces the real counts. None (auto): for models of at least
# _META_MIN_BYTES of parameters and buffers, where a copy costs memory and a real forward time (a
# meta forward is shape-only but pays Python dispatch: on small models it is slower than the real
# one). True/False force it either way (False: deep copies of the real model, the behaviour before
# issue 18; used by tests and benchmarks/prune_memory.py).
_TRIALS_ON_META: bool | None = None
_META_MIN_BYTES = 16 * 2**20


class MetaWeightsError(ValueError):
    """A pruning step needs real weights (or data) but the model is on the ``meta`` device."""


def _meta_criterion_message(imp: Any, model: nn.Module, who: str) -> str:
    return (
        f"{who}: criterion {type(imp).__name__} reads weights or data, but {type(model).__name__} is on "
        "the meta device (or dry_run=True needs its scores after the first step). Plan with a "
        "criterion that reads no weights (importance='random', or a GroupImportance returning "
        "precomputed scores), or run prune(real_model, ..., dry_run=True) with the real weights."
    )


def _check_meta_planning(
    model: nn.Module, imp: Any, dry_run: bool, steps: int, bn_calibration: Any, who: str
) -> None:
    """Refuse, before any work, what cannot run without real weights."""
    meta = on_meta(model)
    if (meta or dry_run) and bn_calibration is not None:
        raise MetaWeightsError(
            f"{who}: bn_calibration needs real weights; with dry_run=True or a model on the meta "
            "device, apply the plan (summary.apply(model, inputs)) and then call recalibrate_bn."
        )
    if imp.requires_data and (meta or (dry_run and steps > 1)):
        raise MetaWeightsError(_meta_criterion_message(imp, model, who))


def _meta_safe(fn: Callable[[], Any], model: nn.Module, who: str) -> Any:
    """``fn()``; on a meta model, an error of its forward says that the model cannot plan on meta."""
    if not on_meta(model):
        return fn()
    try:
        return fn()
    except (RuntimeError, NotImplementedError) as exc:
        raise MetaWeightsError(
            f"{who}: the forward of {type(model).__name__} (or a check of the graph build, such as the "
            f"attention-head probe) does not run on the meta device ({exc}); it needs real values. Plan "
            "on the real model with prune(model, ..., dry_run=True) instead (the search still runs on "
            "meta copies)."
        ) from exc


def _dry_run_copy(
    model: nn.Module, example_inputs: Any, before: Mapping[str, int], who: str
) -> tuple[nn.Module, Any]:
    """The work copy of a ``dry_run``: a meta copy when counting it reproduces ``before``; otherwise
    (a forward that reads values) a deep copy of the real model, with a warning about its memory."""
    try:
        work, inputs = meta_copy(model), meta_inputs(example_inputs)
        if count(work, inputs) == dict(before):
            return work, inputs
        why = "its counts on the meta device differ from the real ones"
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError) as exc:
        why = f"its forward does not run on the meta device ({type(exc).__name__}: {str(exc)[:120]})"
    warnings.warn(
        f"{who}: dry_run plans {type(model).__name__} on a deep copy of the real model (memory: twice the "
        f"model), because {why}. The plan is the same.",
        stacklevel=4,
    )
    return copy.deepcopy(model), example_inputs


def _shadow(
    model: nn.Module, example_inputs: Any, reference: Mapping[str, int] | None
) -> tuple[nn.Module, Any]:
    """``(meta copy, meta inputs)`` when counting them reproduces the real counts, else the real pair.

    A model whose forward needs values (``.item()``, data-dependent branches) keeps the real pair:
    its trials deep-copy it as before, with the same results.
    """
    if _TRIALS_ON_META is False or on_meta(model):
        return model, example_inputs
    if _TRIALS_ON_META is None:
        size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        if size < _META_MIN_BYTES:
            return model, example_inputs
    try:
        copy_, inputs = meta_copy(model), meta_inputs(example_inputs)
        if reference is None:
            reference = count(model, example_inputs)
        if count(copy_, inputs) == dict(reference):
            return copy_, inputs
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
        pass
    return model, example_inputs
