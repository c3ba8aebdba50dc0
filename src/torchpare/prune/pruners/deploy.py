"""Turn an exported channel config into a physically smaller model: :func:`deploy_subnet`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

import torchpare.prune.counting as _counting
from torchpare._utils import did_you_mean
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.history import begin_record, inputs_from_spec
from torchpare.prune.rules.hf_config import sync_hf_config
from torchpare.prune.surgery import apply_plan

__all__ = ["deploy_subnet"]


def deploy_subnet(model: nn.Module, channel_cfg: Mapping[str, Any], example_inputs: Any = None) -> nn.Module:
    """Physically prune ``model`` in place to ``channel_cfg`` (from ``StructurePruner.export_subnet``).

    A front door to :func:`torchpare.prune.surgery.apply_plan`: it checks ``channel_cfg`` against
    the model, turns the kept units into a plan, applies and records it.

    The kept unit indices of every space are used (not the first ``n`` channels), so a fresh copy
    holding the supernet's weights computes what the masked supernet computed.

    Args:
        model: An unpruned instance of the supernet's architecture (weights already loaded).
        channel_cfg: The exported config. Without its ``"__subnet__"`` entry (MMRazor's AutoSlim
            format) every space keeps its first units, as many as the ``out_channels`` of the modules
            computing it (see :func:`~torchpare.prune.pruners.channel_cfg.subnet_meta_from_channels`).
        example_inputs: Inputs to trace the graph; default: rebuilt from the spec in ``channel_cfg``
            (required when it has no ``"__subnet__"``).

    Returns:
        ``model``, pruned and carrying its pruning record (so ``save_pruned`` works).

    Raises:
        KeyError: ``channel_cfg`` names a module or space the model does not have, or it lacks
            ``"__subnet__"`` and no ``example_inputs`` are given.
        ValueError: ``model`` still carries a pruner's subnet masks ("call set_max_channel() first").
        ValueError: a space whose size differs from the model's, or a pruned layer whose channels do
            not match ``channel_cfg`` (the message names the module).

    Example:
        >>> import copy
        >>> import torch
        >>> from torchpare.prune import RandomPruner
        >>> supernet = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2))
        >>> fresh = copy.deepcopy(supernet)
        >>> x = torch.randn(3, 4)
        >>> pruner = RandomPruner(supernet, x)
        >>> pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(0)))
        >>> small = deploy_subnet(fresh, pruner.export_subnet())
        >>> small[0].out_features < 8, torch.allclose(small(x), supernet(x), atol=1e-6)
        (True, True)
    """
    who = "deploy_subnet()"
    from torchpare.prune.pruners.channel_cfg import check_unmasked, with_subnet_entry

    check_unmasked(model, who)  # "call set_max_channel() first", not a size mismatch under the hooks
    channel_cfg = with_subnet_entry(model, channel_cfg, example_inputs, who)  # MMRazor configs too
    meta = channel_cfg["__subnet__"]
    modules = dict(model.named_modules())
    for name, entry in channel_cfg.items():
        if name == "__subnet__":
            continue
        if name not in modules:
            raise KeyError(
                f"{who}: channel_cfg names module {name!r} that {type(model).__name__} lacks; it was exported "
                "from another architecture."
            )
        raw = _counting.module_channels(modules[name])
        want = (entry["raw_in_channels"], entry["raw_out_channels"])
        if raw is not None and tuple(raw) != tuple(want):
            raise ValueError(
                f"{who}: {name!r} has (in, out) channels {raw} but channel_cfg was exported from one with "
                f"{want}; deploy onto an unpruned instance of the same architecture."
            )
    if example_inputs is None:
        device = next((p.device for p in model.parameters()), None)
        example_inputs = inputs_from_spec(meta["example_inputs"], device)
    ignored = tuple(meta.get("ignored", ()))
    graph = DependencyGraph.build(model, example_inputs, ignored=ignored)
    known = {g.id: g for g in graph.all_groups()}
    plan: dict[str, list[int]] = {}
    for gid, space in meta["groups"].items():
        if gid not in known:
            raise KeyError(f"{who}: the model has no channel group {gid!r}{did_you_mean(gid, known)}")
        size = known[gid].size
        if int(space["size"]) != size:
            raise ValueError(
                f"{who}: space {gid!r} has {space['size']} units in channel_cfg but {size} in "
                f"{type(model).__name__}; deploy onto an unpruned instance of the same architecture."
            )
        kept = {int(i) for i in space["kept"]}
        if not kept or not kept <= set(range(size)):
            raise ValueError(
                f"{who}: space {gid!r} keeps {sorted(kept)[:8]}..., not a non-empty subset of 0..{size - 1}."
            )
        removed = [i for i in range(size) if i not in kept]
        if removed:
            plan[gid] = removed
    if plan:
        apply_plan(graph, plan, retrace=True, record=True)
        sync_hf_config(model)
    else:  # recorded all the same, so save_pruned works on the result either way
        begin_record(model, example_inputs)
    for name, entry in channel_cfg.items():
        if name == "__subnet__":
            continue
        got = _counting.module_channels(model.get_submodule(name))
        want = (entry["in_channels"], entry["out_channels"])
        if got is not None and tuple(got) != tuple(want):
            raise ValueError(
                f"{who}: after pruning, {name!r} has (in, out) channels {got} but channel_cfg says {want}; "
                "the config was exported from a different architecture."
            )
    return model


def __getattr__(name: str) -> Any:
    if name == "module_channels":  # moved next to counting
        warnings.warn(
            "torchpare.prune.pruners.deploy.module_channels moved to torchpare.prune.counting.module_channels.",
            FutureWarning,
            stacklevel=2,
        )
        return _counting.module_channels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
