"""``torchpare slim CONFIG``: train a slimmable supernet, search each FLOPs target, deploy and evaluate.

The config is a ``distill`` config whose algorithm is :class:`~torchpare.slim.AutoSlim`, plus two
sections of its own::

    search: {targets: [0.75, 0.5, 0.25], metric: flops, score: accuracy, max_channel_bins: 8,
             calib_batches: 8}
    finetune: {epochs: 5, lr: 0.002}     # optional: fine-tune each deployed subnet with the engine
    baselines: {prune: true, uniform: true, teacher_fraction: 0.5, lr: 0.002}   # optional, see below

``baselines`` adds, per target, the models the searched subnets are measured against: ``prune``: the
full-width model trained plainly for ``teacher_fraction`` of the searched subnets' optimiser steps,
pruned once with :func:`~torchpare.prune.prune` to the target, its BatchNorm statistics re-estimated,
and fine-tuned (at ``lr``, default a fifth of the schedule's) for the remaining steps, so it gets the
same total training steps as each searched subnet (supernet steps plus ``finetune`` steps);
``uniform``: the widest uniform-width subnet of the same supernet within the target (treated like the
searched subnets, fine-tuning included). ``torchpare report`` draws them side by side.

The run folder gets the supernet's ``checkpoints/`` and ``metrics.jsonl`` (``--resume`` continues its
training), ``model.pt`` (the supernet's weights, plain BatchNorm with the
full width's statistics: it loads into the ``model`` section's architecture), per target ``subnet_<pct>.json`` (the channel config, MMRazor's
format plus ``__subnet__``) and ``subnet_<pct>/model/`` (the deployed model, ``save_pruned``), and
``results.json`` with one entry per model for ``torchpare report``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchpare._utils import atomic_write_bytes
from torchpare.engine.config import ConfigError, TrainConfig, save_config, validate_config
from torchpare.engine.measure import model_stats
from torchpare.engine.runner import build_algorithm, build_data, build_model, save_model
from torchpare.engine.trainer import Trainer, evaluate, fetch_batch

__all__ = ["run_slim", "SEARCH_KEYS", "FINETUNE_KEYS", "BASELINE_KEYS"]

SEARCH_KEYS = ("targets", "metric", "score", "max_channel_bins", "calib_batches")
FINETUNE_KEYS = ("epochs", "lr", "batch_size", "optimizer", "scheduler", "weight_decay", "seed")
BASELINE_KEYS = ("prune", "uniform", "teacher_fraction", "lr", "importance")


def _check_baselines(baselines: Any) -> tuple[dict[str, Any], list[str]]:
    if baselines is None:
        return {"prune": False, "uniform": False}, []
    if not isinstance(baselines, dict):
        return {}, [f"baselines: must be a mapping, got {type(baselines).__name__}"]
    errors = [f"baselines.{k}: unknown setting; valid: {', '.join(BASELINE_KEYS)}"
              for k in baselines if k not in BASELINE_KEYS]
    out = {"prune": True, "uniform": True, "teacher_fraction": 0.5, "lr": None, "importance": None, **baselines}
    for k in ("prune", "uniform"):
        if not isinstance(out[k], bool):
            errors.append(f"baselines.{k}: true or false, got {out[k]!r}")
    frac = out["teacher_fraction"]
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1:
        errors.append(f"baselines.teacher_fraction: a number in (0, 1) (the share of the steps spent before "
                      f"pruning), got {frac!r}")
    lr = out["lr"]
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        errors.append(f"baselines.lr: a positive number or null, got {lr!r}")
    if out["importance"] is not None and not isinstance(out["importance"], str):
        errors.append(f"baselines.importance: a prune() importance name (e.g. l1), got {out['importance']!r}")
    return out, errors


def _check(cfg: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None,
                                                         dict[str, Any]]:
    """Split off and check ``search``/``finetune``/``baselines``; the rest is checked as a ``distill`` config."""
    rest = dict(cfg)
    rest.pop("task", None)
    search = rest.pop("search", None) or {}
    finetune = rest.pop("finetune", None)
    baselines, errors = _check_baselines(rest.pop("baselines", None))
    if not isinstance(search, dict):
        errors.append(f"search: must be a mapping, got {type(search).__name__}")
        search = {}
    for k in search:
        if k not in SEARCH_KEYS:
            errors.append(f"search.{k}: unknown setting; valid: {', '.join(SEARCH_KEYS)}")
    targets = search.get("targets", [0.75, 0.5, 0.25])
    if not isinstance(targets, list) or not targets or not all(
        isinstance(t, int | float) and not isinstance(t, bool) and 0 < t <= 1 for t in targets
    ):
        errors.append(f"search.targets: must be a non-empty list of ratios in (0, 1], got {targets!r}")
    if search.get("metric", "flops") not in ("flops", "params", "latency"):
        errors.append(f"search.metric: 'flops', 'params' or 'latency', got {search.get('metric')!r}")
    if search.get("score", "accuracy") not in ("accuracy", "loss", "distill"):
        errors.append(f"search.score: 'accuracy', 'loss' or 'distill', got {search.get('score')!r}")
    if finetune is not None:
        if not isinstance(finetune, dict):
            errors.append(f"finetune: must be a mapping, got {type(finetune).__name__}")
            finetune = None
        else:
            errors += [f"finetune.{k}: unknown setting; valid: {', '.join(FINETUNE_KEYS)}"
                       for k in finetune if k not in FINETUNE_KEYS]
    algo = rest.get("algorithm")
    if isinstance(algo, dict) and algo.get("type") not in ("AutoSlim", "Slimmable"):
        errors.append(f"algorithm.type: 'torchpare slim' trains an AutoSlim supernet, got {algo.get('type')!r}")
    try:
        validate_config(rest, "distill", source)
    except ConfigError as exc:
        errors = exc.errors + errors
    if errors:
        raise ConfigError(source, errors)
    return rest, search, finetune, baselines


def run_slim(cfg: Mapping[str, Any], *, resume: bool = False, quiet: bool = False,
             source: str = "<config>") -> dict[str, Any]:
    """Train the supernet, search every target, deploy, (fine-tune,) evaluate, build the baselines; write
    the run folder.

    Args:
        cfg: The resolved config (``model``, ``algorithm`` of type ``AutoSlim``, ``schedule``,
            ``search``, optional ``data``, ``finetune``, ``baselines``, ``output``).
        resume: Continue the supernet's training from ``<output>/checkpoints/last.pt``.
        quiet: No progress bars.
        source: Where the config came from (for messages).

    Returns:
        ``{"supernet": accuracy, "<pct>%": accuracy, "prune_<pct>%": ..., "uniform_<pct>%": ...}``
        (test accuracy per model).

    Raises:
        ConfigError: every config problem, before anything runs.
    """
    from torchpare.slim import greedy_search

    rest, search, finetune, baselines = _check(cfg, source)
    train_cfg = validate_config(rest, "distill", source)
    train_cfg.quiet = train_cfg.quiet or quiet
    run_dir = Path(cfg.get("output") or "runs/slim")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config({**cfg, "task": "slim"}, run_dir / "config.yaml")
    data = build_data(rest.get("data"))
    torch.manual_seed(train_cfg.seed)
    model = build_model(rest["model"], "model", source)
    teacher = copy.deepcopy(model) if baselines["prune"] else None  # the same initialisation
    algo_cfg = copy.deepcopy(rest)
    if "example_inputs" not in algo_cfg["algorithm"] and "input_shape" not in algo_cfg["algorithm"]:
        algo_cfg["algorithm"]["example_inputs"] = data.example
    algo = build_algorithm(algo_cfg, model, source)
    fitted = Trainer(algo, data.train, val_data=data.val, config=train_cfg, run_dir=run_dir, eval_model=model,
                     name="supernet").fit(resume=resume)
    from torchpare.slim import to_plain_bn

    save_model(to_plain_bn(copy.deepcopy(model)), run_dir)  # loads into the plain architecture
    bs, n = train_cfg.batch_size, len(data.train)
    calib = [fetch_batch(data.train, range(i, min(n, i + bs)))
             for i in range(0, n, bs)][: int(search.get("calib_batches", 8))]
    metric = search.get("metric", "flops")
    result = greedy_search(
        algo, data.val, targets=search.get("targets", (0.75, 0.5, 0.25)), calib_data=calib,
        metric=metric, score=search.get("score", "accuracy"),
        max_channel_bins=int(search.get("max_channel_bins", 8)),
        latency_inputs=data.batch if metric == "latency" else None,
    )
    full = algo.deploy(1.0)
    entries = [{"name": "supernet (max)", "series": "supernet", "accuracy": evaluate(model, data.test)["accuracy"],
                **model_stats(full, data.example, data.batch), "train_steps": fitted.global_step}]
    summary = {"supernet": entries[0]["accuracy"]}
    ft_cfg = None
    if finetune:
        ft_cfg = TrainConfig(**{**{k: getattr(train_cfg, k) for k in ("batch_size", "seed", "device", "quiet")},
                                **finetune})
    ft_steps = 0
    unit = {"flops": "FLOPs", "params": "params", "latency": "latency"}[metric]
    for target, channel_cfg in result.channel_cfgs.items():
        tag = f"{round(100 * target)}"
        atomic_write_bytes(run_dir / f"subnet_{tag}.json", json.dumps(channel_cfg, indent=2).encode())
        small = algo.deploy(channel_cfg, calib)
        extra: dict[str, Any] = {"series": "searched", "target": target, "searched_ratio": result.ratios[target]}
        if ft_cfg is not None:
            ft_steps = Trainer(small, data.train, val_data=data.val, config=ft_cfg,
                               run_dir=run_dir / f"subnet_{tag}_finetune", name=f"finetune {tag}%").fit().global_step
        extra["model_path"] = str(save_model(small, run_dir / f"subnet_{tag}"))
        extra["train_steps"] = fitted.global_step + ft_steps
        acc = evaluate(small, data.test)["accuracy"]
        entries.append({"name": f"searched {tag}% {unit}", "accuracy": acc,
                        **model_stats(small, data.example, data.batch), **extra})
        summary[f"{tag}%"] = acc
    notes = []
    if baselines["uniform"]:
        notes.append(_uniform_baselines(algo, result, entries, summary, data, calib, ft_cfg, metric))
    if teacher is not None:
        notes.append(_prune_baselines(teacher, result, entries, summary, data, train_cfg, baselines,
                                      fitted.global_step + ft_steps, metric, calib))
    payload = {"title": f"torchpare slim: {run_dir.name}", "models": entries, "notes": [n for n in notes if n]}
    atomic_write_bytes(run_dir / "results.json", json.dumps(payload, indent=2).encode())
    return summary


def _uniform_baselines(algo: Any, result: Any, entries: list[dict[str, Any]], summary: dict[str, Any], data: Any,
                       calib: list[Any], ft_cfg: TrainConfig | None, metric: str) -> str:
    """Per target, the widest uniform width of the supernet within it (FLOPs or params; under a latency
    search: within the searched subnet's FLOPs), deployed and treated like the searched subnet."""
    from torchpare.slim.search import _cost

    key = "params" if metric == "params" else "flops"
    low = algo.ratios[0]
    ladder = [r for r in (i / 64 for i in range(1, 65)) if r >= low - 1e-9]
    costs: dict[float, int] = {}

    def cost(r: float) -> int:
        if r not in costs:
            costs[r] = _cost(algo.student, algo.pruner, algo.pruner.ratio_subnet(r), key)
        return costs[r]

    full = cost(1.0)
    skipped = []
    for target in result.channel_cfgs:
        tag = f"{round(100 * target)}"
        searched = next(e for e in entries if e.get("series") == "searched" and e.get("target") == target)
        bound = searched["flops"] if metric == "latency" else target * full
        fits = [r for r in ladder if cost(r) <= bound]  # cost grows with r: bisect would do, the ladder is short
        if not fits:
            skipped.append(tag)
            continue
        r = max(fits)
        net = algo.deploy(r, calib)
        if ft_cfg is not None:
            Trainer(net, data.train, config=ft_cfg, name=f"finetune uniform {tag}%").fit()
        acc = evaluate(net, data.test)["accuracy"]
        entries.append({"name": f"uniform width {r:.3f} ({tag}% target)", "series": "uniform", "target": target,
                        "width_ratio": r, "accuracy": acc, **model_stats(net, data.example, data.batch),
                        "train_steps": searched["train_steps"]})
        summary[f"uniform_{tag}%"] = acc
    note = ("uniform: the widest uniform width (in steps of 1/64, trained range) of the same supernet within "
            "each target, BatchNorm statistics re-estimated" + (", fine-tuned like the searched subnets" if ft_cfg
                                                                else "") + ".")
    if skipped:
        note += f" No uniform width fits the target(s) {', '.join(skipped)}% above the supernet's smallest ratio."
    return note


def _prune_baselines(teacher: Any, result: Any, entries: list[dict[str, Any]], summary: dict[str, Any], data: Any,
                     train_cfg: TrainConfig, baselines: dict[str, Any], total_steps: int, metric: str,
                     calib: list[Any]) -> str:
    """The full-width model trained plainly, pruned once with prune() per target (under a latency search:
    to the searched subnet's FLOPs), fine-tuned: the same total optimiser steps as a searched subnet."""
    from torchpare.prune import prune, recalibrate_bn

    spe = math.ceil(len(data.train) / train_cfg.batch_size)
    pre = max(1, round(total_steps * float(baselines["teacher_fraction"])))
    post = max(1, total_steps - pre)

    def cfg(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(epochs=math.ceil(steps / spe), max_steps=steps, lr=lr,
                           **{k: getattr(train_cfg, k) for k in ("batch_size", "seed", "device", "optimizer",
                                                                 "weight_decay", "quiet")})

    Trainer(teacher, data.train, config=cfg(pre, train_cfg.lr), name="baseline: full width").fit()
    ft_lr = float(baselines["lr"] or train_cfg.lr / 5)
    kwargs = {"importance": baselines["importance"]} if baselines["importance"] else {}
    key = "params" if metric == "params" else "flops"
    full = entries[0][key]
    for target in result.channel_cfgs:
        tag = f"{round(100 * target)}"
        ratio = target
        if metric == "latency":
            ratio = next(e[key] for e in entries if e.get("series") == "searched" and e.get("target") == target) / full
        pruned, _ = prune(copy.deepcopy(teacher), data.example, **{f"target_{key}_ratio": ratio}, **kwargs)
        recalibrate_bn(pruned, calib)
        Trainer(pruned, data.train, config=cfg(post, ft_lr), name=f"baseline: prune {tag}%").fit()
        acc = evaluate(pruned, data.test)["accuracy"]
        entries.append({"name": f"prune() + fine-tune {tag}% {'params' if key == 'params' else 'FLOPs'}",
                        "series": "prune", "target": target, "accuracy": acc,
                        **model_stats(pruned, data.example, data.batch), "train_steps": pre + post})
        summary[f"prune_{tag}%"] = acc
    return (f"prune() + fine-tune: the full-width model (same initialisation as the supernet) trained {pre} steps "
            f"at lr {train_cfg.lr:g}, pruned once with prune() to each target ({key}), BatchNorm statistics "
            f"re-estimated, fine-tuned {post} steps at lr {ft_lr:g}: {pre + post} optimiser steps in all, as "
            f"each searched subnet ({total_steps}).")
