"""Channel configs without ``"__subnet__"`` (MMRazor's AutoSlim format) and the masks-still-set check
of :func:`~torchpare.prune.deploy_subnet`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

__all__ = ["subnet_meta_from_channels", "masking_hooks", "check_unmasked", "with_subnet_entry"]


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
        >>> import torch
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


def masking_hooks(model: nn.Module) -> list[str]:
    """Names of the modules carrying a pruner's subnet-masking hooks."""
    found = []
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(getattr(h, "__qualname__", "").startswith(("InputMasker.", "OutputMasker.")) for h in hooks):
            found.append(name)
    return found


def check_unmasked(model: nn.Module, who: str) -> None:
    """Raise when ``model`` still carries a pruner's subnet masks (deploying would change shapes under them).

    Raises:
        ValueError: naming the masked modules and saying to call ``set_max_channel()`` first.
    """
    masked = masking_hooks(model)
    if masked:
        raise ValueError(
            f"{who}: {type(model).__name__} still has subnet masks set (hooks on {masked[:3]}); call "
            "set_max_channel() first on its pruner (deploying changes shapes under the masking hooks), or "
            "deploy onto a copy made without masks."
        )


def with_subnet_entry(
    model: nn.Module, channel_cfg: Mapping[str, Any], example_inputs: Any, who: str
) -> Mapping[str, Any]:
    """``channel_cfg`` itself when it has ``"__subnet__"``, else a copy with one built from the module
    channels (see :func:`subnet_meta_from_channels`).

    Raises:
        TypeError: ``channel_cfg`` is not a dict.
        KeyError: no ``"__subnet__"`` and no ``example_inputs`` to trace the model with.
    """
    if not isinstance(channel_cfg, Mapping):
        raise TypeError(f"{who}: channel_cfg must be a dict, got {type(channel_cfg).__name__}.")
    if "__subnet__" in channel_cfg:
        return channel_cfg
    if example_inputs is None:
        raise KeyError(
            f"{who}: channel_cfg has no '__subnet__' entry (an MMRazor-style config), so example_inputs "
            "are needed to trace the model; pass them, or pass the dict export_subnet() returned."
        )
    from torchpare.prune import DependencyGraph

    graph = DependencyGraph.build(model, example_inputs)
    return {**channel_cfg, "__subnet__": {"groups": subnet_meta_from_channels(graph.groups(), channel_cfg, who),
                                          "ignored": []}}
