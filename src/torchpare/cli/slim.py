"""``torchpare slim CONFIG``: train a slimmable supernet, search each FLOPs target, deploy and evaluate.

The config is a ``distill`` config whose algorithm is :class:`~torchpare.slim.AutoSlim`, plus two
sections of its own::

    search: {targets: [0.75, 0.5, 0.25], metric: flops, score: accuracy, max_channel_bins: 8,
             calib_batches: 8}
    finetune: {epochs: 5, lr: 0.002}     # optional: fine-tune each deployed subnet with the engine

The run folder gets the supernet's ``checkpoints/`` and ``metrics.jsonl`` (``--resume`` continues its
training), ``model.pt`` (the supernet's weights, plain BatchNorm with the
full width's statistics: it loads into the ``model`` section's architecture), per target ``subnet_<pct>.json`` (the channel config, MMRazor's
format plus ``__subnet__``) and ``subnet_<pct>/model/`` (the deployed model, ``save_pruned``), and
``results.json`` with one entry per model for ``torchpare report``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchpare._utils import atomic_write_bytes
from torchpare.engine.config import ConfigError, TrainConfig, save_config, validate_config
from torchpare.engine.measure import model_stats
from torchpare.engine.runner import build_algorithm, build_data, build_model, save_model
from torchpare.engine.trainer import Trainer, evaluate, fetch_batch

__all__ = ["run_slim", "SEARCH_KEYS", "FINETUNE_KEYS"]

SEARCH_KEYS = ("targets", "metric", "score", "max_channel_bins", "calib_batches")
FINETUNE_KEYS = ("epochs", "lr", "batch_size", "optimizer", "scheduler", "weight_decay", "seed")


def _check(cfg: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Split off and check ``search``/``finetune``; the rest is checked as a ``distill`` config."""
    rest = dict(cfg)
    rest.pop("task", None)
    search = rest.pop("search", None) or {}
    finetune = rest.pop("finetune", None)
    errors: list[str] = []
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
    if search.get("metric", "flops") not in ("flops", "params"):
        errors.append(f"search.metric: 'flops' or 'params', got {search.get('metric')!r}")
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
    return rest, search, finetune


def run_slim(cfg: Mapping[str, Any], *, resume: bool = False, quiet: bool = False,
             source: str = "<config>") -> dict[str, Any]:
    """Train the supernet, search every target, deploy, (fine-tune,) evaluate; write the run folder.

    Args:
        cfg: The resolved config (``model``, ``algorithm`` of type ``AutoSlim``, ``schedule``,
            ``search``, optional ``data``, ``finetune``, ``output``).
        resume: Continue the supernet's training from ``<output>/checkpoints/last.pt``.
        quiet: No progress bars.
        source: Where the config came from (for messages).

    Returns:
        ``{"supernet": accuracy, "<pct>%": accuracy, ...}`` (test accuracy per model).

    Raises:
        ConfigError: every config problem, before anything runs.
    """
    from torchpare.slim import greedy_search

    rest, search, finetune = _check(cfg, source)
    train_cfg = validate_config(rest, "distill", source)
    train_cfg.quiet = train_cfg.quiet or quiet
    run_dir = Path(cfg.get("output") or "runs/slim")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config({**cfg, "task": "slim"}, run_dir / "config.yaml")
    data = build_data(rest.get("data"))
    model = build_model(rest["model"], "model", source)
    algo_cfg = copy.deepcopy(rest)
    if "example_inputs" not in algo_cfg["algorithm"] and "input_shape" not in algo_cfg["algorithm"]:
        algo_cfg["algorithm"]["example_inputs"] = data.example
    algo = build_algorithm(algo_cfg, model, source)
    Trainer(algo, data.train, val_data=data.val, config=train_cfg, run_dir=run_dir, eval_model=model,
            name="supernet").fit(resume=resume)
    from torchpare.slim import to_plain_bn

    save_model(to_plain_bn(copy.deepcopy(model)), run_dir)  # loads into the plain architecture
    bs, n = train_cfg.batch_size, len(data.train)
    calib = [fetch_batch(data.train, range(i, min(n, i + bs)))
             for i in range(0, n, bs)][: int(search.get("calib_batches", 8))]
    result = greedy_search(
        algo, data.val, targets=search.get("targets", (0.75, 0.5, 0.25)), calib_data=calib,
        metric=search.get("metric", "flops"), score=search.get("score", "accuracy"),
        max_channel_bins=int(search.get("max_channel_bins", 8)),
    )
    entries = [{"name": "supernet (max)", "accuracy": evaluate(model, data.test)["accuracy"],
                **model_stats(algo.deploy(1.0), data.example, data.batch)}]
    summary = {"supernet": entries[0]["accuracy"]}
    for target, channel_cfg in result.channel_cfgs.items():
        tag = f"{round(100 * target)}"
        atomic_write_bytes(run_dir / f"subnet_{tag}.json", json.dumps(channel_cfg, indent=2).encode())
        small = algo.deploy(channel_cfg, calib)
        extra: dict[str, Any] = {"target": target, "searched_ratio": result.ratios[target]}
        if finetune:
            ft = TrainConfig(**{**{k: getattr(train_cfg, k) for k in ("batch_size", "seed", "device", "quiet")},
                                **finetune})
            Trainer(small, data.train, val_data=data.val, config=ft, run_dir=run_dir / f"subnet_{tag}_finetune",
                    name=f"finetune {tag}%").fit()
        extra["model_path"] = str(save_model(small, run_dir / f"subnet_{tag}"))
        acc = evaluate(small, data.test)["accuracy"]
        entries.append({"name": f"searched {tag}% FLOPs" if search.get("metric", "flops") == "flops"
                        else f"searched {tag}% params", "accuracy": acc,
                        **model_stats(small, data.example, data.batch), **extra})
        summary[f"{tag}%"] = acc
    atomic_write_bytes(run_dir / "results.json", json.dumps({"models": entries}, indent=2).encode())
    return summary
