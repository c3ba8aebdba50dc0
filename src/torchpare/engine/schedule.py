"""Training settings (:class:`TrainConfig`), optimisers and learning-rate schedules."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

__all__ = ["TrainConfig", "build_optimizer", "build_scheduler", "OPTIMIZERS", "SCHEDULERS", "AMP_MODES",
           "BEST_METRICS", "LOGGERS", "LOGGING_FIELDS"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("constant", "cosine", "linear")
AMP_MODES = ("none", "bf16", "fp16")
BEST_METRICS = ("val_accuracy", "val_loss")
LOGGERS = ("jsonl", "csv", "tensorboard")
# Settings that only change what a run prints and logs: a --resume may change them (not fingerprinted).
LOGGING_FIELDS = ("schedule.log_every", "schedule.loggers")


@dataclass
class TrainConfig:
    """Everything that shapes a training run (the ``schedule`` section of a YAML config).

    Attributes:
        epochs: Passes over the training set.
        max_steps: Stop after this many optimiser steps in all (``None``: run every epoch).
        batch_size: Global batch size (split over processes under ``torchrun``).
        lr, weight_decay, momentum: Optimiser settings (``momentum`` for SGD only).
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"``.
        scheduler: ``"constant"``, ``"cosine"`` or ``"linear"`` decay, after ``warmup_steps``.
        grad_clip: Max global gradient norm (``None``: no clipping).
        amp: ``"none"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA, with a gradient scaler).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        seed: Seed of the data order and the RNGs.
        checkpoint_every: Write a checkpoint every N steps (0: only at epoch ends).
        keep_checkpoints: How many of the newest checkpoints to keep (plus the best one).
        best_metric: The epoch metric that picks ``checkpoints/best.pt`` (``val_accuracy``, higher is
            better, or ``val_loss``, lower is better).
        drop_last: Drop the last incomplete batch of each epoch.
        sync_batchnorm: Under ``torchrun``, turn the trained objective's BatchNorms into
            ``SyncBatchNorm`` (batch statistics over the global batch, as in one process).
        quiet: No progress bar and no progress lines.
        log_every: Off a terminal, also print a progress line every N steps (0: one line per epoch only).
        loggers: Where metrics go besides the console: ``"jsonl"`` (``metrics.jsonl``, always written:
            reports and ``--resume`` read it), ``"csv"`` (``metrics.csv``) and ``"tensorboard"``
            (``tensorboard/`` event files; needs the ``tensorboard`` package, ``pip install
            'torchpare[tensorboard]'``).

    Example:
        >>> TrainConfig(epochs=2, lr=0.01).validate()
        []
        >>> print(TrainConfig(lr=-1.0, optimizer="adamx").validate()[0])
        lr: must be > 0, got -1.0
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = None
    amp: str = "none"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    best_metric: str = "val_accuracy"
    drop_last: bool = False
    sync_batchnorm: bool = False
    quiet: bool = False
    log_every: int = 0
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, prefix: str = "") -> list[str]:
        """Every problem as ``"<key path>: <what is wrong>"`` (empty when the settings are valid)."""
        errs: list[str] = []

        def bad(key: str, msg: str) -> None:
            errs.append(f"{prefix}{key}: {msg}")

        ints = {"epochs": 1, "batch_size": 1, "warmup_steps": 0, "checkpoint_every": 0, "seed": 0,
                "keep_checkpoints": 1, "log_every": 0}
        for key, low in ints.items():
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool):
                bad(key, f"must be an integer, got {v!r}")
            elif v < low:
                bad(key, f"must be >= {low}, got {v}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            bad("max_steps", f"must be a positive integer or null, got {self.max_steps!r}")
        for key in ("lr", "weight_decay", "momentum"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                bad(key, f"must be a number, got {v!r}")
            elif key == "lr" and v <= 0:
                bad(key, f"must be > 0, got {v}")
            elif v < 0:
                bad(key, f"must be >= 0, got {v}")
        if self.grad_clip is not None and (
            not isinstance(self.grad_clip, (int, float)) or self.grad_clip <= 0
        ):
            bad("grad_clip", f"must be a positive number or null, got {self.grad_clip!r}")
        for key, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("amp", AMP_MODES),
                             ("best_metric", BEST_METRICS)):
            v = getattr(self, key)
            if v not in allowed:
                bad(key, f"must be one of {', '.join(allowed)}, got {v!r}")
        if not isinstance(self.loggers, (list, tuple)) or not all(isinstance(v, str) for v in self.loggers):
            bad("loggers", f"must be a list of names from {', '.join(LOGGERS)}, got {self.loggers!r}")
        else:
            for name in self.loggers:
                if name not in LOGGERS:
                    bad("loggers", f"unknown logger {name!r}; use names from {', '.join(LOGGERS)}")
            if "tensorboard" in self.loggers and importlib.util.find_spec("tensorboard") is None:
                bad("loggers", "'tensorboard' needs the tensorboard package, which is not installed; "
                    "pip install 'torchpare[tensorboard]' (or tensorboard), or remove it from the list")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith(("cuda:", "mps"))
        ):
            bad("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return errs


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` over ``params``.

    Raises:
        ValueError: no trainable parameter, or an unknown optimiser name.
    """
    params = list(params)
    if not params:
        raise ValueError("build_optimizer(): nothing to train (no parameter requires grad).")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"build_optimizer(): unknown optimizer {cfg.optimizer!r}; use one of {OPTIMIZERS}.")


class _LRFactor:
    """Picklable LR multiplier: linear warm-up, then constant / cosine / linear decay to 0."""

    def __init__(self, kind: str, warmup: int, total: int) -> None:
        self.kind, self.warmup, self.total = kind, warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following ``cfg.scheduler`` over ``total_steps``."""
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"build_scheduler(): unknown scheduler {cfg.scheduler!r}; use one of {SCHEDULERS}.")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _LRFactor(cfg.scheduler, cfg.warmup_steps, total_steps)
    )
