"""Forward hooks that make masked units come out of their producers as zeros.

The consumer-input masks of ``_masking.py`` alone make a masked supernet compute exactly what the
deployed model computes, but every tensor *between* producer and consumer would still carry the
masked channels; a feature-distillation recorder on a conv, its BatchNorm or the activation after it
would see channels the subnet does not have. So each producer of a masked group (a member with
``role == "out"`` owned by a known channel-producing layer) also multiplies its output by the 0/1
mask. This never changes what consumers read (they read zeros either way), so exactness is kept.

Zeroing a conv's output in front of a training-mode BatchNorm would pull that BatchNorm's running
statistics of the masked channels towards ``mean=0, var=0`` (a later, wider subnet would then divide
by ``sqrt(eps)``), so those statistics are saved before and restored after the BatchNorm runs: masked
channels neither train nor update their statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from torchpare._utils import get_submodule
from torchpare.prune.pruners._masking import _MaskHooks, member_owner

__all__ = ["ProducerSite", "producer_sites", "OutputMasker"]


@dataclass(frozen=True)
class ProducerSite:
    """One layer computing a group's units: its output's ``output_dim`` holds ``output_size`` channels;
    unit ``i`` comes out at ``unit_indices[i]`` along it."""

    module_name: str
    output_dim: int
    output_size: int
    unit_indices: tuple[tuple[int, ...], ...]


def _output_layout(module: nn.Module, param: str, dim: int) -> tuple[int, int] | None:
    """``(output_dim, output_size)`` when slice ``dim`` of ``module.<param>`` indexes output channels."""
    tensor = getattr(module, param, None)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
        return None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # weight is (in, out / groups, ...): only ungrouped transposed convs index outputs directly.
        out_param_dim = 1 if param == "weight" else 0
        layout = (1, module.out_channels) if module.groups == 1 or param == "bias" else None
    elif isinstance(module, nn.modules.conv._ConvNd):
        out_param_dim, layout = 0, (1, module.out_channels)
    elif isinstance(module, nn.Linear):
        out_param_dim, layout = 0, (-1, module.out_features)
    elif isinstance(module, nn.modules.batchnorm._NormBase):  # BatchNorm, InstanceNorm
        out_param_dim, layout = 0, (1, module.num_features)
    elif isinstance(module, nn.GroupNorm):
        out_param_dim, layout = 0, (1, module.num_channels)
    elif isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        out_param_dim, layout = 0, (-1, module.normalized_shape[0])
    elif isinstance(module, nn.Embedding):
        out_param_dim, layout = 1, (-1, module.embedding_dim)
    elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        # transformers' Conv1D (GPT-2): weight is (in, out), output is x @ weight + bias.
        out_param_dim = 1 if param == "weight" else 0
        layout = (-1, int(module.nf))
    else:
        return None
    if layout is None or dim != out_param_dim or int(tensor.shape[dim]) != layout[1]:
        return None
    return layout


def producer_sites(model: nn.Module, group: Any, who: str = "producer_sites()") -> list[ProducerSite]:
    """The leaf layers computing ``group``'s units whose outputs can be zeroed channel-wise.

    Members owned by other modules (free parameters, containers, unknown layer types) are left out:
    their outputs keep the masked units, which consumers still read as zeros.
    """
    sites: dict[str, ProducerSite] = {}
    for member in group.members:
        path, param = member_owner(member)
        if member.role != "out" or path in sites:
            continue
        module = get_submodule(model, path, who)
        if next(module.children(), None) is not None:
            continue
        layout = _output_layout(module, param, member.dim)
        if layout is not None:
            sites[path] = ProducerSite(path, layout[0], layout[1], tuple(tuple(u) for u in member.index_map))
    return list(sites.values())


class OutputMasker(_MaskHooks):
    """Multiplies producer outputs by per-unit 0/1 masks through forward hooks.

    Hooks run before hooks registered earlier (``prepend=True``), so recorders attached before the
    subnet was set see the zeros too. Hooks exist only while a unit of a module's output is off;
    :meth:`remove` (or ``set_masks`` with all-ones masks) takes every hook away.

    Args:
        model: The model whose producers are hooked.
        sites: ``{group_id: [ProducerSite, ...]}`` from :func:`producer_sites`.
    """

    size_attr = "output_size"

    def __init__(self, model: nn.Module, sites: Mapping[str, list[ProducerSite]]) -> None:
        super().__init__(model, sites)
        self._layouts = {s.module_name: s for group_sites in self.sites.values() for s in group_sites}
        self._off_index: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._saved_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _reset(self) -> None:
        super()._reset()
        self._off_index = {}
        self._saved_stats = {}

    def _install(self, name: str) -> list[RemovableHandle]:
        module = get_submodule(self.model, name, "OutputMasker")
        handles = [module.register_forward_hook(self._hook_for(name), prepend=True)]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(self._save_stats_for(name)))
        return handles

    def _off(self, name: str, device: torch.device) -> torch.Tensor:
        index = self._off_index.get((name, device))
        if index is None:
            index = (self._vectors[name] == 0).nonzero().flatten().to(device)
            self._off_index[(name, device)] = index
        return index

    def _save_stats_for(self, name: str) -> Any:
        def pre_hook(module: nn.Module, _args: tuple[Any, ...]) -> None:
            mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
            if name not in self._vectors or not module.training or mean is None or var is None:
                self._saved_stats.pop(name, None)
                return
            off = self._off(name, mean.device)
            self._saved_stats[name] = (mean.index_select(0, off), var.index_select(0, off))

        return pre_hook

    def _restore_stats(self, name: str, module: nn.Module) -> None:
        saved = self._saved_stats.pop(name, None)
        if saved is None:
            return
        off = self._off(name, saved[0].device)
        # Through ``.data``: autograd saved these buffers for BatchNorm's backward (which in training
        # mode does not read them), and an in-place write to the tracked tensor would fail backward.
        module.running_mean.data.index_copy_(0, off, saved[0])
        module.running_var.data.index_copy_(0, off, saved[1])

    def _hook_for(self, name: str) -> Any:
        site = self._layouts[name]

        def hook(module: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
            self._restore_stats(name, module)
            vec = self._vectors.get(name)
            if vec is None or not isinstance(out, torch.Tensor):
                return None
            dim = site.output_dim % out.ndim
            if out.shape[dim] != vec.numel():
                raise ValueError(
                    f"OutputMasker: {name!r} produced {out.shape[dim]} channels on dim {dim} of output "
                    f"{tuple(out.shape)}, expected {vec.numel()}; the model changed shape after the "
                    "pruner was built. Build a new pruner."
                )
            shape = [vec.numel()] + [1] * (out.ndim - dim - 1)
            mask = self._cast_mask((name, out.device, out.dtype, out.ndim), vec, out, shape)
            return out * mask

        return hook
