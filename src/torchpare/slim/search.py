"""Greedy slimming (AutoSlim): one pass from the max subnet down to the smallest target.

Each space's widths form a ladder of ``max_channel_bins`` bins (rounded to the pruner's ``divisor``,
never below the supernet's smallest trained ratio). At each step every space that can shrink is
shrunk by one bin in turn, the candidate is scored on held-out data (accuracy, or the distillation
loss against the max subnet for unlabelled data) with BatchNorm statistics re-estimated for it, and
the cheapest shrink is kept. The configuration is recorded the first time the FLOPs (or parameters,
or the measured latency) fall to each target ratio, so one pass serves every target. A shrink step
usually lands below the target; ``refine`` then grows spaces back by one bin while the cost stays within
the target and the held-out score improves, so the subnet uses the budget it is given.

With ``metric="latency"`` the cost of the current subnet is its deployed model's measured latency
(:func:`~torchpare.slim.measure_latency_ms` by default: warm-up, then the median of repeated runs)
over the max subnet's, measured the same way and interleaved with it (load that comes and goes during
the search slows both alike); the shrink chosen at each step still follows the
held-out score only.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from torchpare.distill.algorithms.base import forward_model, logits_of
from torchpare.prune import count, deploy_subnet

__all__ = ["greedy_search", "SearchResult"]

Metric = Literal["flops", "params", "latency"]
LatencyFn = Callable[[nn.Module, Any], float]
Score = Literal["accuracy", "loss", "distill"]


@dataclass
class SearchResult:
    """What :func:`greedy_search` returns.

    Attributes:
        channel_cfgs: ``{target: channel_cfg}`` (MMRazor's format, plus ``"__subnet__"``), one per target.
        ratios: ``{target: achieved FLOPs (params, latency) ratio}``.
        scores: ``{target: held-out score of the recorded subnet}``.
        history: One record per accepted step: ``{"ratio", "score", "widths"}``.
    """

    channel_cfgs: dict[float, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[float, float] = field(default_factory=dict)
    scores: dict[float, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _ladder(pruner: Any, size: int, bins: int) -> list[int]:
    """Allowed kept-unit counts of a space of ``size`` units, ascending."""
    keep = getattr(pruner, "_keep", None)
    low_ratio = pruner.ratios[0] if hasattr(pruner, "ratios") else 1.0 / bins
    counts = set()
    for b in range(1, bins + 1):
        n = keep(size, b / bins) if keep is not None else max(1, math.ceil(b * size / bins))
        counts.add(n)
    low = keep(size, low_ratio) if keep is not None else 1
    return sorted(c for c in counts | {size} if c >= low)


def _batches(data: Any) -> list[tuple[Any, Any]]:
    """Held-out data as ``[(inputs, targets or None), ...]``."""
    if isinstance(data, torch.utils.data.TensorDataset):
        tensors = data.tensors
        return [(tensors[0], tensors[1] if len(tensors) > 1 else None)]
    out = []
    for batch in data:
        if isinstance(batch, (tuple, list)):
            out.append((batch[0], batch[1] if len(batch) > 1 else None))
        else:
            out.append((batch, None))
    return out


@torch.no_grad()
def _evaluate(model: nn.Module, batches: list[tuple[Any, Any]], score: Score,
              reference: list[torch.Tensor] | None, distill_loss: Callable[..., torch.Tensor] | None) -> float:
    """Higher is better: accuracy, or minus the cross-entropy / distillation loss."""
    was = model.training
    model.eval()
    try:
        correct = total = 0
        loss = 0.0
        for i, (x, y) in enumerate(batches):
            logits = logits_of(forward_model(model, x)).float()
            if score == "distill":
                if reference is None or distill_loss is None:
                    raise ValueError("greedy_search(): score='distill' needs the algorithm's distill_loss.")
                loss += float(distill_loss(logits, reference[i])) * len(logits)
            else:
                if y is None:
                    raise ValueError(
                        f"greedy_search(): score={score!r} needs labelled held-out data; use score='distill' "
                        "for unlabelled data."
                    )
                loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
            total += len(logits)
    finally:
        model.train(was)
    if score == "accuracy":
        return correct / max(total, 1) - 1e-6 * loss / max(total, 1)  # ties broken by the loss
    return -loss / max(total, 1)


def _cost(model: nn.Module, pruner: Any, masks: Mapping[str, torch.Tensor], metric: Metric,
          latency_fn: LatencyFn | None = None, latency_inputs: Any = None) -> float:
    """FLOPs, params or latency (``latency_fn(deployed, latency_inputs)``) of the deployed ``masks`` subnet."""
    small = _deployed(model, pruner, masks)
    if metric == "latency":
        from torchpare.slim.latency import measure_latency_ms

        fn = latency_fn or measure_latency_ms
        return float(fn(small, pruner.example_inputs if latency_inputs is None else latency_inputs))
    return count(small, pruner.example_inputs)[metric]


def _deployed(model: nn.Module, pruner: Any, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The ``masks`` subnet of ``model`` as a physically smaller plain model."""
    with pruner._hooks_suspended():
        clone = copy.deepcopy(model)
    from torchpare.slim.switchable_bn import to_plain_bn

    to_plain_bn(clone)
    meta = {"groups": {g: {"size": int(m.numel()), "kept": m.nonzero().flatten().tolist()}
                       for g, m in masks.items()}, "ignored": list(pruner.ignored)}
    return deploy_subnet(clone, {"__subnet__": meta}, pruner.example_inputs)


def greedy_search(
    algorithm: Any,
    val_data: Any,
    targets: Sequence[float] = (0.75, 0.5, 0.25),
    *,
    calib_data: Iterable[Any] | None = None,
    num_calib_batches: int | None = None,
    metric: Metric = "flops",
    score: Score = "accuracy",
    max_channel_bins: int = 8,
    latency_fn: LatencyFn | None = None,
    latency_inputs: Any = None,
    refine: bool = True,
    latency_rounds: int = 3,
) -> SearchResult:
    """Search one channel configuration per target by greedy slimming of a trained supernet.

    Args:
        algorithm: A trained :class:`~torchpare.slim.AutoSlim` (its supernet, pruner and
            distillation loss are used).
        val_data: Held-out data: a ``TensorDataset`` or an iterable of ``(inputs, targets)`` batches
            (targets may be absent with ``score="distill"``).
        targets: FLOPs (params, latency) ratios of the max subnet to reach, each in ``(0, 1]``.
        calib_data: Batches to re-estimate BatchNorm statistics of each candidate (needed when the
            model has BatchNorm layers); ``recalibrate_bn``'s layouts.
        num_calib_batches: Use at most this many calibration batches per candidate.
        metric: ``"flops"`` or ``"params"`` (counted on the deployed subnet), or ``"latency"``
            (measured on the deployed subnet, see ``latency_fn``).
        score: ``"accuracy"`` (ties broken by cross-entropy), ``"loss"`` (cross-entropy) or
            ``"distill"`` (the algorithm's distillation loss against the max subnet; no labels).
        max_channel_bins: Bins per space: one shrink removes ``1 / max_channel_bins`` of its units.
        latency_fn: With ``metric="latency"``: ``(model, inputs) -> milliseconds``; default
            :func:`~torchpare.slim.measure_latency_ms` (3 warm-up calls, median of 15 runs). Each ratio
            is the median of ``latency_rounds`` timings of the subnet over the median of as many timings
            of the max subnet, interleaved with them.
        latency_inputs: The inputs latency is measured on (e.g. a deployment-sized batch, on the
            target device); default the pruner's example inputs.
        refine: Per target, spend what the last shrink left under it: grow spaces back one bin at a
            time, the best-scoring growth that stays within the target first, while the held-out score
            improves (``False``: the configuration at the first step under the target, as AutoSlim).

    Returns:
        A :class:`SearchResult` with one ``channel_cfg`` per target.

    Raises:
        ValueError: a target outside ``(0, 1]``, an unknown ``metric``/``score``, or a target the
            smallest trained subnet cannot reach (the message gives the smallest ratio reachable).

    Example:
        >>> from torchpare.zoo import DigitsCNN
        >>> from torchpare.slim import AutoSlim
        >>> algo = AutoSlim(DigitsCNN(width=4), {"ratios": [0.5, 1.0]}, input_shape=[1, 1, 8, 8])
        >>> data = [(torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
        >>> result = greedy_search(algo, data, targets=[0.6], calib_data=data, max_channel_bins=2)
        >>> result.ratios[0.6] <= 0.6
        True
    """
    who = "greedy_search()"
    targets = sorted({float(t) for t in targets}, reverse=True)
    if not targets or any(not 0 < t <= 1 for t in targets):
        raise ValueError(f"{who}: targets must be ratios in (0, 1], got {targets}.")
    if metric not in ("flops", "params", "latency"):
        raise ValueError(f"{who}: metric must be 'flops', 'params' or 'latency', got {metric!r}.")
    if isinstance(latency_rounds, bool) or not isinstance(latency_rounds, int) or latency_rounds < 1:
        raise ValueError(f"{who}: latency_rounds must be an int >= 1, got {latency_rounds!r}.")
    if latency_fn is not None and not callable(latency_fn):
        raise TypeError(f"{who}: latency_fn must be a callable (model, inputs) -> ms, got {type(latency_fn).__name__}.")
    if score not in ("accuracy", "loss", "distill"):
        raise ValueError(f"{who}: score must be 'accuracy', 'loss' or 'distill', got {score!r}.")
    if int(max_channel_bins) < 1:
        raise ValueError(f"{who}: max_channel_bins must be >= 1, got {max_channel_bins}.")
    pruner, model = algorithm.pruner, algorithm.student
    batches = _batches(val_data)
    calib = list(calib_data) if calib_data is not None else None
    reference = None
    if score == "distill":
        with algorithm.subnet(1.0) as net:
            net.eval()
            with torch.no_grad():
                reference = [logits_of(forward_model(net, x)).float() for x, _ in batches]
            net.train()
    ladders = {g: _ladder(pruner, grp.size, int(max_channel_bins)) for g, grp in pruner.groups.items()}
    level = {g: len(steps) - 1 for g, steps in ladders.items()}

    def masks_of(lv: Mapping[str, int]) -> dict[str, torch.Tensor]:
        return {g: torch.arange(pruner.groups[g].size) < ladders[g][i] for g, i in lv.items()}

    def scored(lv: Mapping[str, int]) -> float:
        masks = masks_of(lv)
        has_own = algorithm._uniform(masks) is not None and (
            algorithm.bn_mode == "switchable" or algorithm._uniform(masks) == 1.0)
        with algorithm.subnet(masks, None if has_own else _need(calib, who), num_calib_batches) as net:
            return _evaluate(net, batches, score, reference, getattr(algorithm, "distill_loss", None))

    def cost(lv: Mapping[str, int]) -> float:
        return _cost(model, pruner, masks_of(lv), metric, latency_fn, latency_inputs)

    if metric == "latency":
        # Side by side with the max subnet, interleaved, so load that changes during the search moves both.
        from torchpare.slim.latency import measure_latency_ms

        time_it = latency_fn or measure_latency_ms
        timed_inputs = pruner.example_inputs if latency_inputs is None else latency_inputs
        widest = _deployed(model, pruner, masks_of(level))

        def ratio_of(lv: Mapping[str, int]) -> float:
            small = _deployed(model, pruner, masks_of(lv))
            ref, got = [], []
            for _ in range(latency_rounds):
                ref.append(float(time_it(widest, timed_inputs)))
                got.append(float(time_it(small, timed_inputs)))
            if not statistics.median(ref) > 0:
                raise ValueError(f"{who}: the max subnet's measured latency is not positive; check latency_fn.")
            return statistics.median(got) / statistics.median(ref)

        full = 1.0
    else:
        full = cost(level)
        if not full > 0:
            raise ValueError(f"{who}: the max subnet's {metric} is {full!r}; it must be positive to take ratios.")

        def ratio_of(lv: Mapping[str, int]) -> float:
            return cost(lv) / full
    result = SearchResult()
    current_score = scored(level)
    pending = list(targets)
    ratio = 1.0
    reached: dict[float, tuple[dict[str, int], float, float]] = {}
    while pending:
        while pending and ratio <= pending[0] + 1e-12:
            reached[pending.pop(0)] = (dict(level), ratio, current_score)
        if not pending:
            break
        best: tuple[float, str] | None = None
        for g in level:
            if level[g] == 0:
                continue
            trial = {**level, g: level[g] - 1}
            s = scored(trial)
            if best is None or s > best[0]:
                best = (s, g)
        if best is None:
            raise ValueError(
                f"{who}: the smallest subnet reaches a {metric} ratio of {ratio:.3f}, above the targets "
                f"{pending}; train the supernet with a smaller minimum ratio (pruner ratios)."
            )
        level[best[1]] -= 1
        current_score = best[0]
        ratio = ratio_of(level)
        result.history.append({
            "ratio": ratio, "score": current_score,
            "widths": {g: ladders[g][i] for g, i in level.items()},
        })
    for t, (lv, r, sc) in reached.items():
        if refine:
            lv, r, sc = _refine(lv, r, sc, t, ladders, scored, ratio_of)
        result.channel_cfgs[t] = pruner.export_subnet(masks_of(lv))
        result.ratios[t] = r
        result.scores[t] = sc
    return result


def _refine(level: dict[str, int], ratio: float, score: float, target: float, ladders: Mapping[str, list[int]],
            scored: Callable[[Mapping[str, int]], float], ratio_of: Callable[[Mapping[str, int]], float],
            ) -> tuple[dict[str, int], float, float]:
    """Spend the budget a shrink step left under ``target``: grow one space by one bin at a time (the best
    held-out score among the growths that stay within the target) while the score improves."""
    level = dict(level)
    while True:
        best: tuple[float, str, float] | None = None
        for g, i in level.items():
            if i + 1 >= len(ladders[g]):
                continue
            trial = {**level, g: i + 1}
            r = ratio_of(trial)
            if r > target + 1e-12:
                continue
            s = scored(trial)
            if s > score and (best is None or s > best[0]):
                best = (s, g, r)
        if best is None:
            return level, ratio, score
        score, g, ratio = best
        level[g] += 1


def _need(calib: list[Any] | None, who: str) -> list[Any]:
    if calib is None:
        raise ValueError(
            f"{who}: candidates need BatchNorm statistics of their own; pass calib_data (a few training batches)."
        )
    return calib
