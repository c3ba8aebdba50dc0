"""Where a model's weights live: wrappers and placements that the graph build cannot prune, refused early.

Pruning replaces parameters by smaller ones. A ``DistributedDataParallel`` (or ``DataParallel``)
wrapper keeps its own references to the original parameters (gradient buckets, replicas), so pruning
through it would leave the wrapper syncing tensors the model no longer uses; ``FullyShardedDataParallel``
holds flattened or sharded parameters whose channels cannot be sliced on one rank; weights on the
``meta`` device next to real ones (offloaded weights of a ``device_map``) have no values to slice.
Each case raises :class:`ModelPlacementError` naming the fix. A model spread over several real
devices (a ``device_map`` over GPUs) is accepted: labels live on the CPU and every slice is taken on
its tensor's own device.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ModelPlacementError", "check_placement"]

_DATA_PARALLEL = ("DistributedDataParallel", "DataParallel")
_SHARDED = ("FullyShardedDataParallel", "FSDPModule")


class ModelPlacementError(ValueError):
    """The model is wrapped (DDP, FSDP) or placed (weights on ``meta`` next to real ones) so that it
    cannot be pruned as it is; the message says what to do instead."""


def _class_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def check_placement(model: nn.Module, who: str) -> None:
    """Raise :class:`ModelPlacementError` when ``model`` cannot be traced and pruned where it is.

    Args:
        model: the model given to ``who``.
        who: the public function checking (starts the message).

    Raises:
        ModelPlacementError: ``model`` is a ``DistributedDataParallel`` / ``DataParallel`` wrapper
            (prune ``model.module``, then wrap again), is or contains an FSDP-sharded module (gather
            the full weights first), or has parameters on the ``meta`` device next to real ones.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> check_placement(net, "prune()")  # one device: nothing to say
        >>> _ = net[2].to("meta")
        >>> try:
        ...     check_placement(net, "prune()")
        ... except ValueError as exc:
        ...     print(str(exc).split(',')[0])
        prune(): Sequential has weights on the meta device ('2.weight') next to real ones ('0.weight')
    """
    names = _class_names(model)
    wrapper = next((n for n in _DATA_PARALLEL if n in names), None)
    if wrapper is not None:
        raise ModelPlacementError(
            f"{who}: the model is wrapped in {wrapper}, which keeps references to the original "
            f"parameters (gradient buckets), so it cannot follow a pruning. Prune the wrapped module "
            f"instead and wrap it again: `pruned, summary = prune(model.module, ...)`, then "
            f"`model = {wrapper}(pruned, ...)` (on every rank, with the same plan: prune with a "
            f"deterministic criterion, or prune on rank 0 and load the pruned model on the others)."
        )
    # one walk over the module tables (named_parameters() and named_buffers() would walk twice more)
    meta = real = None
    sharded_types: dict[type, str | None] = {}
    for name, m in model.named_modules():
        cls = type(m)
        if cls not in sharded_types:
            sharded_types[cls] = next((n for n in _SHARDED if n in _class_names(m)), None)
        sharded = sharded_types[cls]
        if sharded is not None:
            where = f"at {name!r}" if name else "(the model itself)"
            raise ModelPlacementError(
                f"{who}: {type(model).__name__} contains an FSDP-sharded module {where} ({sharded}); "
                "its parameters are flattened or sharded across ranks and their channels cannot be "
                "sliced. Prune before sharding (or load the full state dict into an unwrapped model), "
                "then shard the pruned model."
            )
        for table in (m._parameters, m._buffers):
            for pn, t in table.items():
                if t is None:
                    continue
                if t.is_meta:
                    meta = meta or (f"{name}.{pn}" if name else pn)
                else:
                    real = real or (f"{name}.{pn}" if name else pn)
    if meta and real:
        raise ModelPlacementError(
            f"{who}: {type(model).__name__} has weights on the meta device ({meta!r}) next to real "
            f"ones ({real!r}), e.g. weights offloaded by a device_map: they hold no values to score or "
            "slice. Load every weight (device_map without offload), or plan on a meta copy, "
            "`prune(torchpare.prune.counting.meta_copy(model), ..., importance='random', dry_run=True)`, "
            "and apply the plan to the fully loaded model with `summary.apply(model, inputs)`."
        )
