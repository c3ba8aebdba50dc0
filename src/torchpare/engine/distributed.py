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
           "gather_objects"]


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
