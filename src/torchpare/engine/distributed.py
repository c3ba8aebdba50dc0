"""Several processes: ``torchrun --nproc_per_node=N`` runs the same command with one process per rank.

:func:`init_distributed` reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)
and starts ``torch.distributed`` with gloo on CPU or nccl on CUDA. Without that environment it
returns a single-process :class:`DistInfo` and starts nothing.

Example:
    >>> info = init_distributed(device="cpu")
    >>> (info.rank, info.world_size, info.is_main)
    (0, 1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "shutdown_distributed", "resolve_device", "all_reduce_mean",
           "gather_objects", "is_labelled_loss", "global_loss_weights", "normalise_losses"]


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and device of this process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` picks CUDA (this process's local GPU) when available, else CPU.

    Raises:
        ValueError: ``device`` names CUDA but none is available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"resolve_device(): device {device!r} asked for, but CUDA is not available; use 'cpu'."
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Start the process group when launched by ``torchrun`` (idempotent).

    Returns:
        This process's :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over ranks (``value`` itself in a single process)."""
    if not info.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def is_labelled_loss(name: str) -> bool:
    """Whether loss ``name`` averages over the labelled samples (supervised cross-entropy), not the batch.

    Supervised losses are named ``loss``/``loss_ce`` (a plain model) or end in ``.loss`` (``student.loss``,
    ``teacher.loss``, an online peer's ``student.<name>.loss``); every other loss (``distill.*``) is taken
    to average over the samples of the batch.

    Example:
        >>> [is_labelled_loss(n) for n in ("loss_ce", "student.loss", "distill.loss_kd")]
        [True, True, False]
    """
    return name in ("loss", "loss_ce") or name.endswith((".loss", ".loss_ce"))


def global_loss_weights(n_samples: int, n_labelled: int, info: DistInfo, device: torch.device) -> tuple[float, float]:
    """Factors that turn this rank's batch-mean and labelled-mean losses into shares of the global means.

    DistributedDataParallel averages gradients over ranks, so a rank's loss ``L_r`` (a mean over its
    ``n_r`` samples) should enter as ``L_r * n_r * world_size / N`` (``N`` = the global count): the
    gradient is then the one of the mean over the whole global batch, also when the ranks hold
    different numbers of samples (an odd global batch) or of labelled samples (partial labels).

    Returns:
        ``(sample_factor, labelled_factor)``; ``(1.0, 1.0)`` in a single process.
    """
    if not info.distributed:
        return 1.0, 1.0
    counts = torch.tensor([float(n_samples), float(n_labelled)], dtype=torch.float64, device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    total_samples, total_labelled = counts.tolist()
    w = info.world_size
    sample = n_samples * w / total_samples if total_samples else 0.0
    labelled = n_labelled * w / total_labelled if total_labelled else 0.0
    return sample, labelled


def normalise_losses(
    losses: dict[str, torch.Tensor], targets: Any, n_samples: int, info: DistInfo
) -> dict[str, torch.Tensor]:
    """``losses`` of this rank weighted by :func:`global_loss_weights` (unchanged in a single process).

    ``n_samples`` is 0 on a rank that got no sample of the global batch (it ran a stand-in sample whose
    losses then weigh 0). Labelled samples are the targets ``>= 0`` (``-100`` = unlabelled).
    """
    if not info.distributed or not losses:
        return losses
    device = next(iter(losses.values())).device
    n_labelled = int((targets >= 0).sum()) if isinstance(targets, torch.Tensor) and n_samples else 0
    sample, labelled = global_loss_weights(n_samples, n_labelled, info, device)
    return {k: v * (labelled if is_labelled_loss(k) else sample) for k, v in losses.items()}


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the process group (no-op in a single process).

    Without it a rank that finishes first can tear the connections down under a slower one, which
    then aborts at exit.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
