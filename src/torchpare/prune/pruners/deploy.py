"""Turn an exported channel config into a physically smaller model: :func:`deploy_subnet`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean

__all__ = ["deploy_subnet", "module_channels", "subnet_meta_from_channels"]


def module_channels(module: nn.Module) -> tuple[int, int] | None:
    """``(in_channels, out_channels)`` read from a layer's weight shape (``None`` for weightless ones).

    Example:
        >>> module_channels(nn.Conv2d(3, 8, 3)), module_channels(nn.BatchNorm2d(8))
        ((3, 8), (8, 8))
    """
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd) and isinstance(weight, torch.Tensor):
        if module.transposed:
            return int(weight.shape[0]), int(weight.shape[1]) * module.groups
        return int(weight.shape[1]) * module.groups, int(weight.shape[0])
    if isinstance(module, nn.modules.batchnorm._NormBase):
        n = module.running_mean.shape[0] if weight is None else weight.shape[0]  # type: ignore[union-attr]
        return int(n), int(n)
    if not isinstance(weight, torch.Tensor):
        return None
    if isinstance(module, nn.Embedding):  # (vocabulary, width)
        return int(weight.shape[0]), int(weight.shape[1])
    if type(module).__name__ == "Conv1D" and weight.ndim == 2:  # transformers' GPT-2 layer: (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    if weight.ndim >= 2:
        return int(weight.shape[1]), int(weight.shape[0])
    return int(weight.shape[0]), int(weight.shape[0])


def subnet_meta_from_channels(
    groups: Iterable[Any], channel_cfg: Mapping[str, Any], who: str = "deploy_subnet()"
) -> dict[str, dict[str, Any]]:
    """Kept units per channel group read from a channel config without ``"__subnet__"`` (MMRazor's
    AutoSlim format ``{module: {"in_channels", "out_channels", "raw_in_channels", "raw_out_channels"}}``).

    A group keeps its first units, as many as fill the first ``out_channels`` output channels of the
    modules of ``channel_cfg`` computing it (slimmable networks keep the leading channels). Groups that
    no listed module computes keep every unit.

    Returns:
        ``{group_id: {"size", "unit", "kept"}}`` (the ``groups`` entry of ``"__subnet__"``).

    Raises:
        ValueError: an ``out_channels`` that does not end at a unit boundary (e.g. half a head), or two
            modules of one group asking for different numbers of units.

    Example:
        >>> from torchpare.prune import DependencyGraph
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> graph = DependencyGraph.build(net, torch.randn(1, 4))
        >>> cfg = {"0": {"in_channels": 4, "out_channels": 2, "raw_in_channels": 4, "raw_out_channels": 8}}
        >>> subnet_meta_from_channels(graph.groups(), cfg)["0"]["kept"]
        [0, 1]
    """
    from torchpare.prune.pruners._masking import member_owner

    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        wanted: dict[str, int] = {}
        for member in group.members:
            path, param = member_owner(member)
            entry = channel_cfg.get(path)
            if member.role != "out" or param != "weight" or not isinstance(entry, Mapping):
                continue
            n = int(entry["out_channels"])
            kept = [i for i, idx in enumerate(member.index_map) if max(idx) < n]
            if sum(len(member.index_map[i]) for i in kept) != n:
                raise ValueError(
                    f"{who}: channel_cfg[{path!r}] keeps out_channels={n}, which does not end at a unit "
                    f"boundary of space {group.id!r} ({group.unit}s of {len(member.index_map[0])} channels)."
                )
            wanted[path] = len(kept)
        if not wanted:
            continue
        counts = set(wanted.values())
        if len(counts) > 1:
            raise ValueError(
                f"{who}: channel_cfg asks for different numbers of units of space {group.id!r}: {wanted}; "
                "modules computing one space must keep the same channels."
            )
        k = counts.pop()
        if not 0 < k <= group.size:
            raise ValueError(f"{who}: space {group.id!r} would keep {k} of {group.size} units.")
        out[group.id] = {"size": group.size, "unit": group.unit, "kept": list(range(k))}
    return out


def _masking_hooks(model: nn.Module) -> list[str]:
    """Names of the modules carrying a pruner's subnet-masking hooks."""
    found = []
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(getattr(h, "__qualname__", "").startswith(("InputMasker.", "OutputMasker.")) for h in hooks):
            found.append(name)
    return found


def deploy_subnet(model: nn.Module, channel_cfg: Mapping[str, Any], example_inputs: Any = None) -> nn.Module:
    """Physically prune ``model`` in place to ``channel_cfg`` (from ``StructurePruner.export_subnet``).

    The kept unit indices of every space are used (not the first ``n`` channels), so a fresh copy
    holding the supernet's weights computes what the masked supernet computed.

    Args:
        model: An unpruned instance of the supernet's architecture (weights already loaded).
        channel_cfg: The exported config. Without its ``"__subnet__"`` entry (MMRazor's AutoSlim
            format) every space keeps its first units, as many as the ``out_channels`` of the modules
            computing it (see :func:`subnet_meta_from_channels`).
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
    from torchpare.prune.graph import DependencyGraph
    from torchpare.prune.io import append_step, begin_record, inputs_from_spec

    who = "deploy_subnet()"
    masked = _masking_hooks(model)
    if masked:
        raise ValueError(
            f"{who}: {type(model).__name__} still has subnet masks set (hooks on {masked[:3]}); call "
            "set_max_channel() first on its pruner (deploying changes shapes under the masking hooks), or "
            "deploy onto a copy made without masks."
        )
    if not isinstance(channel_cfg, Mapping):
        raise TypeError(f"{who}: channel_cfg must be a dict, got {type(channel_cfg).__name__}.")
    meta = channel_cfg.get("__subnet__")
    if meta is None and example_inputs is None:
        raise KeyError(
            f"{who}: channel_cfg has no '__subnet__' entry (an MMRazor-style config), so example_inputs "
            "are needed to trace the model; pass them, or pass the dict export_subnet() returned."
        )
    modules = dict(model.named_modules())
    for name, entry in channel_cfg.items():
        if name == "__subnet__":
            continue
        if name not in modules:
            raise KeyError(
                f"{who}: channel_cfg names module {name!r} that {type(model).__name__} lacks; it was exported "
                "from another architecture."
            )
        raw = module_channels(modules[name])
        want = (entry["raw_in_channels"], entry["raw_out_channels"])
        if raw is not None and tuple(raw) != tuple(want):
            raise ValueError(
                f"{who}: {name!r} has (in, out) channels {raw} but channel_cfg was exported from one with "
                f"{want}; deploy onto an unpruned instance of the same architecture."
            )
    if example_inputs is None:
        device = next((p.device for p in model.parameters()), None)
        example_inputs = inputs_from_spec(meta["example_inputs"], device)
    ignored = tuple(meta.get("ignored", ())) if meta is not None else ()
    graph = DependencyGraph.build(model, example_inputs, ignored=ignored)
    known = {g.id: g for g in graph.all_groups()}
    if meta is None:
        meta = {"groups": subnet_meta_from_channels(graph.groups(), channel_cfg, who)}
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
    begin_record(model, example_inputs)
    if plan:
        graph.prune(plan)
        append_step(model, plan, ignored)
        from torchpare.prune.target import sync_hf_config

        sync_hf_config(model)
    for name, entry in channel_cfg.items():
        if name == "__subnet__":
            continue
        got = module_channels(model.get_submodule(name))
        want = (entry["in_channels"], entry["out_channels"])
        if got is not None and tuple(got) != tuple(want):
            raise ValueError(
                f"{who}: after pruning, {name!r} has (in, out) channels {got} but channel_cfg says {want}; "
                "the config was exported from a different architecture."
            )
    return model
