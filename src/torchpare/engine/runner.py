"""Run one config: train, distill, prune (+ recover), fine-tune or evaluate, and save the results.

This is what the ``torchpare`` commands call. Each run folder gets ``config.yaml`` (the resolved
config), ``metrics.jsonl``, ``checkpoints/last.pt``, the model (``model.pt`` or, for a pruned model,
the ``model/`` folder of :func:`torchpare.prune.save_pruned`) and ``results.json`` (test accuracy,
parameters, FLOPs, CPU latency, size), from which ``torchpare report`` draws.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchpare._utils import atomic_write_bytes
from torchpare.distill import recover
from torchpare.engine.config import save_config, validate_config
from torchpare.engine.distributed import init_distributed
from torchpare.engine.measure import model_stats
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.prune import prune

__all__ = ["run_task", "build_data", "build_model", "save_model", "mask_labels", "DigitsData"]

UNLABELLED = -100  # the "no label" target of torchpare.distill and the engine's cross-entropy


class DigitsData:
    """Train (labels masked to ``label_fraction``, with sample indices), val and test sets of a split."""

    def __init__(self, split: Any, label_fraction: float = 1.0, seed: int = 0) -> None:
        self.split = split
        y = mask_labels(split.y_train, label_fraction, seed)
        self.train = TensorDataset(split.x_train, y, torch.arange(len(y)))
        self.train_labelled_only = TensorDataset(split.x_train[y >= 0], y[y >= 0])
        self.val = TensorDataset(split.x_val, split.y_val)
        self.test = TensorDataset(split.x_test, split.y_test)
        self.example = split.x_train[:1]
        self.batch = split.x_test[:64]


def mask_labels(y: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Keep ``fraction`` of the labels per class (seeded); the others become ``-100`` (unlabelled).

    Example:
        >>> y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> int((mask_labels(y, 0.5) >= 0).sum())
        4
    """
    if fraction >= 1.0:
        return y.clone()
    gen = torch.Generator().manual_seed(seed + 12345)
    out = torch.full_like(y, UNLABELLED)
    for cls in torch.unique(y):
        idx = torch.nonzero(y == cls).flatten()
        keep = idx[torch.randperm(len(idx), generator=gen)[: max(1, round(fraction * len(idx)))]]
        out[keep] = y[keep]
    return out


def build_data(cfg: Mapping[str, Any] | None) -> DigitsData:
    """Build the data section (``{"type": "digits", "seed": 0, "label_fraction": 1.0}``)."""
    from torchpare.registry import DATASETS

    cfg = dict(cfg or {"type": "digits"})
    frac = cfg.pop("label_fraction", 1.0)
    cfg.pop("batch_size", None)
    split = DATASETS.build(cfg)
    return DigitsData(split, frac, seed=int(cfg.get("seed", 0)))


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a ``MODELS`` config; ``checkpoint`` loads a state dict file or a pruned-model folder."""
    from torchpare.registry import MODELS

    cfg = dict(cfg)
    ckpt = cfg.pop("checkpoint", None)
    model = MODELS.build(cfg)
    if ckpt is None:
        return model
    path = Path(ckpt)
    if path.is_dir():
        from torchpare.prune.io import load_pruned

        return load_pruned(path, model)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"build_model(): '{path}' does not fit {cfg.get('type')}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}. Check the model section's arguments (width, hidden, ...)."
        )
    return model


def save_model(model: nn.Module, run_dir: Path) -> Path:
    """``run_dir/model/`` (pruned models, via ``save_pruned``) or ``run_dir/model.pt`` (a state dict)."""
    from torchpare.prune.io import pruning_record, save_pruned

    if pruning_record(model) is not None:
        save_pruned(model, run_dir / "model")
        return run_dir / "model"
    path = run_dir / "model.pt"
    from torchpare._utils import atomic_save

    atomic_save(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return path


def _write_results(run_dir: Path, name: str, model: nn.Module, data: DigitsData, extra: dict[str, Any]) -> dict:
    test = evaluate(model, data.test)
    entry = {"name": name, "accuracy": test["accuracy"], **model_stats(model, data.example, data.batch), **extra}
    atomic_write_bytes(run_dir / "results.json", json.dumps({"models": [entry]}, indent=2).encode())
    return entry


def run_task(cfg: Mapping[str, Any], task: str, *, resume: bool = False, quiet: bool = False,
             source: str = "<config>") -> dict[str, Any]:
    """Validate ``cfg`` for ``task``, run it and write the run folder.

    Args:
        cfg: The resolved config (after ``--set`` overrides).
        task: ``train``, ``distill``, ``prune``, ``finetune`` or ``evaluate``.
        resume: Continue from ``<output>/checkpoints/last.pt``.
        quiet: No progress bar.
        source: Where the config came from (for error messages).

    Returns:
        The results entry (test accuracy, params, FLOPs, latency, size, model path).

    Raises:
        ConfigError: every config problem, before anything trains.
        CheckpointError: ``resume`` with a missing/corrupt/mismatched checkpoint.
    """
    train_cfg = validate_config(cfg, task, source)
    train_cfg.quiet = train_cfg.quiet or quiet
    run_dir = Path(cfg.get("output") or f"runs/{task}")
    info = init_distributed(train_cfg.device)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config({**cfg, "task": task} if "task" not in cfg else dict(cfg), run_dir / "config.yaml")
    torch.manual_seed(train_cfg.seed)
    data = build_data(cfg.get("data"))
    model = build_model(cfg["model"])
    extra: dict[str, Any] = {}
    objective: nn.Module = model
    if task == "distill":
        from torchpare.registry import ALGORITHMS

        teacher = build_model(cfg["teacher"])
        objective = ALGORITHMS.build({**cfg["algorithm"], "student": model, "teacher": teacher})
    elif task == "prune":
        original = model
        model, summary = prune(copy.deepcopy(original), data.example, **(cfg.get("pruner") or {}))
        extra["prune_summary"] = str(summary)
        objective = model
        if cfg.get("recover") is not None:
            objective = recover(model, original, **cfg["recover"])
    if task != "evaluate" and not (task == "prune" and "schedule" not in cfg):
        trainer = Trainer(objective, data.train, val_data=data.val, config=train_cfg, run_dir=run_dir,
                          eval_model=model, name=task)
        trainer.fit(resume=resume)
    if not info.is_main:
        return {}
    extra["model_path"] = str(save_model(model, run_dir))
    return _write_results(run_dir, str(cfg.get("name", task)), model, data, extra)
