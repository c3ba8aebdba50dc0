"""The training loop: train, distill or fine-tune anything with the loss interface, resume exactly.

The :class:`Trainer` drives an *objective*: any ``nn.Module`` with
``loss(inputs, targets, **extra) -> dict[str, Tensor]`` (every ``torchpare.distill`` algorithm, or
:class:`~torchpare.engine.objective.SupervisedObjective` around a plain model). It owns the data
order (a seeded permutation per epoch, so a position ``(epoch, step)`` fully defines the next
batch), which is what makes a resumed run bitwise equal to an uninterrupted one.

Under ``torchrun`` each process takes ``batch[rank::world_size]`` of every global batch and the
objective is wrapped in ``DistributedDataParallel``; only rank 0 writes checkpoints and metrics.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> torch.manual_seed(0) and None
    >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    >>> trainer = Trainer(torch.nn.Linear(4, 2), data, config=TrainConfig(epochs=2, batch_size=8, quiet=True))
    >>> result = trainer.fit()
    >>> result.global_step, len(result.history)
    (8, 2)
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset, default_collate

from torchpare.engine.checkpoint import RESUME_MAY_CHANGE, CheckpointError, CheckpointFiles, model_fingerprint
from torchpare.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    gather_objects,
    init_distributed,
    normalise_losses,
)
from torchpare.engine.loggers import build_loggers
from torchpare.engine.metrics import MetricsLog
from torchpare.engine.objective import SupervisedObjective, eval_model_of, total_loss_of
from torchpare.engine.progress import EpochProgress, ProgressLines, bar_on_terminal
from torchpare.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from torchpare.engine.schedule import LOGGING_FIELDS, TrainConfig, build_optimizer, build_scheduler
from torchpare.model_io import call_model, logits_of

__all__ = ["Trainer", "TrainResult", "evaluate", "epoch_batches", "fetch_batch"]

Callback = Callable[["Trainer", dict[str, Any]], None]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = False) -> list[list[int]]:
    """The global batches of one epoch: a permutation seeded by ``(seed, epoch)`` cut into batches.

    Example:
        >>> epoch_batches(5, 2, seed=0, epoch=0) == epoch_batches(5, 2, seed=0, epoch=0)
        True
        >>> [len(b) for b in epoch_batches(5, 2, seed=0, epoch=0)]
        [2, 2, 1]
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def fetch_batch(dataset: Dataset, indices: Sequence[int]) -> Any:
    """Collate ``dataset[i]`` for ``indices`` (one indexing per tensor for a ``TensorDataset``; a dataset
    with its own ``fetch_batch(indices)`` method collates itself, e.g. sentences padded per batch)."""
    own = getattr(dataset, "fetch_batch", None)
    if callable(own):
        return own(indices)
    if isinstance(dataset, TensorDataset):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return tuple(t[idx] for t in dataset.tensors)
    return default_collate([dataset[i] for i in indices])


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _split_batch(batch: Any) -> tuple[Any, torch.Tensor, dict[str, Any]]:
    """``(x, y)``, ``(x, y, idx)`` or a dict with ``inputs``/``targets`` -> inputs, targets, extras."""
    if isinstance(batch, dict):
        extra = {k: v for k, v in batch.items() if k not in ("inputs", "targets")}
        return batch["inputs"], batch["targets"], extra
    if len(batch) == 2:
        return batch[0], batch[1], {}
    if len(batch) == 3:
        return batch[0], batch[1], {"indices": batch[2]}
    raise ValueError(
        f"Trainer: a batch must be (inputs, targets), (inputs, targets, indices) or a dict with 'inputs' and "
        f"'targets'; got a sequence of {len(batch)} items."
    )


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, device: str | torch.device | None = None, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy and cross-entropy of a classifier over the labelled samples of ``dataset`` (items
    ``(x, y[, ...])``); unlabelled samples (``y < 0``) are left out, and a batch without a labelled
    sample is not run. An unlabelled dataset (a sentences file) gives ``n == 0`` (accuracy and loss NaN).

    The model's train/eval mode is restored afterwards.

    Returns:
        ``{"accuracy": float in [0, 1], "loss": float, "n": int}`` (``n``: the labelled samples).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        n = len(dataset)  # type: ignore[arg-type]
        for start in range(0, n, batch_size):
            batch = fetch_batch(dataset, range(start, min(n, start + batch_size)))
            x, y, _ = _split_batch(batch)
            labelled = torch.as_tensor(y) >= 0
            if not bool(labelled.any()):
                continue  # nothing labelled in this batch: the model is not run
            logits = logits_of(call_model(model, _to_device(x, device))).float()
            y = y.to(device)
            if not bool(labelled.all()):
                keep = labelled.to(device)
                logits, y = logits[keep], y[keep]
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "n": 0}
    return {"accuracy": correct / total, "loss": loss_sum / total, "n": total}


def _metric_text(record: dict[str, Any], key: str) -> str:
    """``"val_accuracy=0.91"`` for the progress bar ("" before the first validation)."""
    return f"{key}={record[key]:.4g}" if isinstance(record.get(key), float) else ""


class _LossForward(nn.Module):
    """Puts ``objective.loss`` behind ``forward`` so DistributedDataParallel can wrap it."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, inputs: Any, targets: torch.Tensor, extra: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.objective.loss(inputs, targets, **extra)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the epoch records, the last step and the final validation scores."""

    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    final: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None


class Trainer:
    """Train an objective (a distillation algorithm, or a plain model with ``loss_fn``).

    Args:
        objective: An ``nn.Module`` with ``loss(inputs, targets, **extra) -> dict``; a plain model is
            wrapped in :class:`SupervisedObjective` with ``loss_fn``.
        train_data: A map-style dataset yielding ``(x, y)``, ``(x, y, idx)`` or dicts.
        val_data: Evaluated after every epoch (accuracy and loss of the evaluated model).
        config: A :class:`TrainConfig`.
        run_dir: Where ``metrics.jsonl`` and ``checkpoints/last.pt`` go; ``None`` writes nothing.
        loss_fn: For a plain model; default cross-entropy ignoring negative targets.
        eval_model: The model to evaluate; default ``objective.student`` / ``objective.model``.
        callbacks: Called as ``cb(trainer, record)`` after every step (after its checkpoint).
        name: A label for the progress bar and the metric records.
        fingerprint: Further settings a checkpoint must match on resume (the engine passes the whole
            resolved config, :func:`~torchpare.engine.checkpoint.config_fingerprint`).

    Raises:
        TypeError: ``objective`` has no ``loss`` method and is not an ``nn.Module``.
        ValueError: invalid ``config`` (every problem listed).
    """

    def __init__(
        self,
        objective: nn.Module,
        train_data: Dataset,
        *,
        val_data: Dataset | None = None,
        config: TrainConfig | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eval_model: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        name: str = "train",
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(objective, nn.Module):
            raise TypeError(f"Trainer: objective must be an nn.Module, got {type(objective).__name__}.")
        if not hasattr(objective, "loss") or loss_fn is not None:
            objective = SupervisedObjective(objective, loss_fn)
        self.config = config or TrainConfig()
        problems = self.config.validate(prefix="schedule.")
        if problems:
            raise ValueError("Trainer: invalid training settings:\n  " + "\n  ".join(problems))
        self.objective = objective
        self.train_data = train_data
        self.val_data = val_data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.eval_model = eval_model if eval_model is not None else eval_model_of(objective)
        self.callbacks = list(callbacks)
        self.name = name
        self.fingerprint_extra = dict(fingerprint or {})
        self.dist: DistInfo = init_distributed(self.config.device)
        if self.config.amp == "fp16" and self.dist.device.type != "cuda":
            raise ValueError("Trainer: schedule.amp='fp16' needs CUDA; use amp='bf16' on CPU.")
        if self.config.sync_batchnorm and self.dist.distributed and self.dist.device.type != "cuda":
            raise ValueError(
                f"Trainer: schedule.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs only on GPUs "
                f"under DistributedDataParallel), but this run is on {self.dist.device.type}; set "
                f"sync_batchnorm: false (BatchNorm statistics are then per process, see docs/engine.md)."
            )
        self._loss_params = self._accepted_extras(objective)

    @staticmethod
    def _accepted_extras(objective: nn.Module) -> set[str] | None:
        params = inspect.signature(objective.loss).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return set(params)

    # -- paths --------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / "last.pt" if self.run_dir is not None else None

    def _fingerprint(self) -> dict[str, Any]:
        """Parameter shapes, every training setting but those in ``RESUME_MAY_CHANGE``, and the extras."""
        settings = {
            k: v for k, v in self.config.to_dict().items() if f"schedule.{k}" not in RESUME_MAY_CHANGE + LOGGING_FIELDS
        }
        settings.pop("device", None)  # "auto" vs "cpu" naming the same device is not a different run
        return model_fingerprint(
            self.objective,
            **settings,
            world_size=self.dist.world_size,
            train_size=len(self.train_data),  # type: ignore[arg-type]
            **self.fingerprint_extra,
        )

    def checkpoint_files(self) -> CheckpointFiles | None:
        """The run folder's :class:`~torchpare.engine.checkpoint.CheckpointFiles` (``None`` without ``run_dir``)."""
        if self.run_dir is None:
            return None
        return CheckpointFiles(self.run_dir / "checkpoints", self.config.keep_checkpoints, self.config.best_metric)

    def resume_checkpoint(self, resume: bool | str | os.PathLike[str] = True) -> tuple[dict[str, Any], Path]:
        """Find and validate the checkpoint ``fit(resume=...)`` would continue from; writes nothing.

        Args:
            resume: ``True``: the newest readable checkpoint of ``run_dir/checkpoints`` (an unreadable
                one is skipped with a warning naming it); a path: that checkpoint.

        Returns:
            ``(payload, path)``.

        Raises:
            CheckpointError: no checkpoint, or none readable.
            CheckpointMismatchError: the checkpoint belongs to another config (every difference listed).
        """
        files = self.checkpoint_files()
        path = None if resume is True else Path(resume)
        if files is None:
            if path is None:
                raise CheckpointError(
                    "Trainer.fit(resume=True): no run_dir, so no checkpoint; run without --resume to start a new run."
                )
            files = CheckpointFiles(path.parent, self.config.keep_checkpoints, self.config.best_metric)
        self.objective.to(self.dist.device)
        if path is None and not files.candidates():
            raise CheckpointError(
                f"Trainer.fit(resume=True): no checkpoint at '{files.last}'; "
                f"run without --resume to start a new run."
            )
        return files.load_for_resume(self._fingerprint(), path, map_location=self.dist.device)

    # -- main loop ----------------------------------------------------------------------------
    def fit(self, resume: bool | str | os.PathLike[str] = False) -> TrainResult:
        """Run the schedule, or continue one (``resume=True``: the newest readable checkpoint of
        ``run_dir/checkpoints``; a path: that checkpoint; see :meth:`resume_checkpoint`).

        Raises:
            CheckpointError: ``resume`` without a checkpoint, or a corrupt/mismatched one.
        """
        c, info = self.config, self.dist
        is_main = info.is_main
        self.objective.to(info.device)
        params = (
            list(self.objective.trainable_parameters())
            if hasattr(self.objective, "trainable_parameters")
            else [p for p in self.objective.parameters() if p.requires_grad]
        )
        optimizer = build_optimizer(params, c)
        steps_per_epoch = len(self._batches(0))
        for module in self.objective.modules():  # per-loss schedules counting in epochs (distill.loss_schedule)
            if hasattr(module, "set_steps_per_epoch"):
                module.set_steps_per_epoch(steps_per_epoch)
        total_steps = min(c.max_steps or 10**12, steps_per_epoch * c.epochs)
        scheduler = build_scheduler(optimizer, c, total_steps)
        scaler = torch.amp.GradScaler("cuda") if c.amp == "fp16" else None
        log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=is_main) if self.run_dir else None

        epoch, step_in_epoch, global_step = 0, 0, 0
        loss_sum, loss_count = 0.0, 0
        history: list[dict[str, Any]] = []
        files = self.checkpoint_files()
        if resume is not False and resume is not None:
            state, _ = self.resume_checkpoint(resume)
            if files is not None:  # best.pt keeps being picked against the best so far
                files.best = dict(state.get("best") or {}) or None
            self.objective.load_state_dict(state["objective"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            for factor in scheduler.lr_lambdas:  # epochs / max_steps may grow on resume: stretch the LR curve
                if hasattr(factor, "total"):
                    factor.total = max(total_steps, 1)
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            pos = state["position"]
            epoch, step_in_epoch, global_step = pos["epoch"], pos["step_in_epoch"], pos["global_step"]
            loss_sum, loss_count = pos["loss_sum"], pos["loss_count"]
            history = list(state.get("history", []))
            rngs = state["rng"]
            restore_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
            if log is not None:
                log.truncate_after(global_step)
        else:
            seed_everything(c.seed + info.rank)
            if log is not None:
                log.reset()
        resumed_at = global_step if resume is not False and resume is not None else None
        loggers = build_loggers(c.loggers, self.run_dir, resumed_at) if self.run_dir and is_main else []
        lines = ProgressLines(self.name, c.epochs, c.log_every, enabled=is_main and not c.quiet and not bar_on_terminal())
        last_metric = _metric_text(history[-1] if history else {}, c.best_metric)

        if info.distributed and c.sync_batchnorm:  # in place; the parameters (and the optimiser's) stay
            nn.SyncBatchNorm.convert_sync_batchnorm(self.objective)
        loss_module: nn.Module = _LossForward(self.objective)
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            loss_module = DDP(
                loss_module, device_ids=[info.device.index] if info.device.type == "cuda" else None
            )

        def checkpoint(metric: float | None = None) -> None:
            rng = gather_objects(capture_rng_state(), info)  # every rank takes part
            if not is_main or files is None:
                return
            files.save(
                {
                    "objective": self.objective.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "rng": rng,
                    "position": {
                        "epoch": epoch,
                        "step_in_epoch": step_in_epoch,
                        "global_step": global_step,
                        "loss_sum": loss_sum,
                        "loss_count": loss_count,
                    },
                    "history": history,
                    "config": c.to_dict(),
                },
                self._fingerprint(),
                step=global_step,
                metric=metric,
            )

        self.objective.train()
        done = global_step >= total_steps
        while epoch < c.epochs and not done:
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(epoch)
            batches = self._batches(epoch)
            t0, first_step = time.perf_counter(), step_in_epoch
            show = None if (is_main and not c.quiet) else False  # None: only on a terminal
            with EpochProgress(
                len(batches), f"{self.name} {epoch + 1}/{c.epochs}", show, step_in_epoch, last_metric
            ) as bar:
                while step_in_epoch < len(batches):
                    local = batches[step_in_epoch][info.rank :: info.world_size]
                    # a rank left without a sample of a short last batch runs a stand-in that weighs 0
                    n_local = len(local)
                    local = local or batches[step_in_epoch][:1]
                    losses = self._step(loss_module, optimizer, scheduler, scaler, params, local, n_local)
                    step_in_epoch += 1
                    global_step += 1
                    total = float(all_reduce_mean(losses.pop("loss").detach(), info))
                    loss_sum, loss_count = loss_sum + total, loss_count + 1
                    record = {
                        "kind": "step",
                        "name": self.name,
                        "epoch": epoch,
                        "step": global_step,
                        "loss": total,
                        "lr": scheduler.get_last_lr()[0],
                        **{k: float(all_reduce_mean(v.detach().float(), info)) for k, v in losses.items()},
                    }
                    if log is not None:
                        log.write(record)
                    for logger in loggers:
                        logger.log(record)
                    lines.step(record, len(batches[step_in_epoch - 1]))
                    bar.advance(loss=total)
                    if global_step >= total_steps:
                        done = True
                    if (
                        c.checkpoint_every
                        and global_step % c.checkpoint_every == 0
                        and not done
                        and step_in_epoch < len(batches)
                    ):
                        checkpoint()
                    for cb in self.callbacks:
                        cb(self, record)
                    if done:
                        break
            ep = {
                "kind": "epoch",
                "name": self.name,
                "epoch": epoch,
                "step": global_step,
                "train_loss": loss_sum / max(loss_count, 1),
                "epoch_time_s": time.perf_counter() - t0,
            }
            ep["samples_per_s"] = sum(map(len, batches[first_step:step_in_epoch])) / max(ep["epoch_time_s"], 1e-9)
            if self.val_data is not None:
                scores = evaluate(self.eval_model, self.val_data, info.device)
                if scores["n"]:  # an unlabelled validation set (sentences) has no accuracy
                    ep.update(val_accuracy=scores["accuracy"], val_loss=scores["loss"])
            history.append(ep)
            if log is not None:
                log.write(ep)
            for logger in loggers:
                logger.log(ep)
            lines.epoch(ep, total_steps, scheduler.get_last_lr()[0])
            last_metric = _metric_text(ep, c.best_metric)
            epoch, step_in_epoch, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
            checkpoint(ep.get(c.best_metric))
        for logger in loggers:
            logger.close()
        final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
        return TrainResult(history=history, global_step=global_step, final=final, run_dir=self.run_dir)

    def _batches(self, epoch: int) -> list[list[int]]:
        c = self.config
        return epoch_batches(len(self.train_data), c.batch_size, c.seed, epoch, c.drop_last)  # type: ignore[arg-type]

    def _step(
        self,
        loss_module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        params: list[nn.Parameter],
        indices: list[int],
        n_local: int | None = None,
    ) -> dict[str, torch.Tensor]:
        c, device = self.config, self.dist.device
        inputs, targets, extra = _split_batch(fetch_batch(self.train_data, indices))
        if self._loss_params is not None:
            extra = {k: v for k, v in extra.items() if k in self._loss_params}
        inputs, targets, extra = _to_device((inputs, targets, extra), device)
        with _autocast(device, c.amp):
            losses = loss_module(inputs, targets, extra)
            # shares of the global means: several processes give the one-process gradient (docs/engine.md)
            losses = normalise_losses(losses, targets, len(indices) if n_local is None else n_local, self.dist)
            total = total_loss_of(self.objective, losses)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        return {"loss": total.detach().float(), **{k: v.detach() for k, v in losses.items()}}
