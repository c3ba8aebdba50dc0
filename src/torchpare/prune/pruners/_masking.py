"""Where a channel group's units are read, and forward pre-hooks that zero them there.

A physically pruned model no longer has the input columns that consumers (conv/linear layers) used to
read the removed units with. Multiplying each consumer's *input* by a 0/1 mask therefore gives the
pruned model's outputs exactly, whatever sits between producer and consumer (BatchNorm biases,
residual additions, activations with ``f(0) != 0`` such as sigmoid). Zeroing only the producers'
outputs would not: a BatchNorm bias or ``sigmoid(0) = 0.5`` leaks a non-zero value to the consumer.
(Producers are zeroed *as well*, by ``_producer_masking.py``, so intermediate features lack the
masked units; the consumer masks are what make the output exact.)
Both :class:`~torchpare.prune.pruners.StructurePruner` (subnet masks) and the GroupFisher importance
(gradients of those masks) build on these sites.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from torchpare._utils import get_submodule

__all__ = ["ConsumerSite", "consumer_sites", "InputMasker", "site_input", "member_owner", "unit_index"]


@functools.lru_cache(maxsize=256)
def unit_index(index_map: tuple[tuple[int, ...], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flat indices, unit of each)`` of an ``index_map``, for vectorised gathers and ``index_add``."""
    flat = [i for idx in index_map for i in idx]
    units = [u for u, idx in enumerate(index_map) for _ in idx]
    return torch.tensor(flat, dtype=torch.long), torch.tensor(units, dtype=torch.long)


def mask_vectors(
    masks: Mapping[str, torch.Tensor], sites: Mapping[str, list[Any]], size_attr: str
) -> dict[str, torch.Tensor]:
    """Per-module 0/1 vectors from ``{group_id: bool[size]}`` masks over the groups' sites.

    Each site has ``module_name``, ``unit_indices`` and a size attribute (``size_attr``: the length
    of the masked dim); a module shared by several groups gets the product of their masks.
    Groups whose mask keeps every unit add nothing.
    """
    vectors: dict[str, torch.Tensor] = {}
    for gid, mask in masks.items():
        if bool(mask.all()):
            continue
        off = ~mask.bool().cpu()
        for site in sites.get(gid, ()):
            vec = vectors.get(site.module_name)
            if vec is None:
                vec = vectors[site.module_name] = torch.ones(getattr(site, size_attr))
            flat, units = unit_index(site.unit_indices)
            vec[flat[off[units]]] = 0.0
    return vectors


@dataclass(frozen=True)
class ConsumerSite:
    """One module reading a group's units: its first input's ``input_dim`` holds ``input_size`` channels;
    unit ``i`` is read at ``unit_indices[i]`` along it."""

    module_name: str
    input_dim: int
    input_size: int
    unit_indices: tuple[tuple[int, ...], ...]


def member_owner(member: Any) -> tuple[str, str]:
    """``(module path, parameter name)`` of a member; rules may name a descendant's parameter
    (``module_name="attn", param_name="o_proj.weight"``), which lives on module ``attn.o_proj``."""
    full = f"{member.module_name}.{member.param_name}" if member.module_name else member.param_name
    path, _, leaf = full.rpartition(".")
    return path, leaf


def _input_layout(module: nn.Module, member: Any, param: str) -> tuple[int, int] | None:
    """``(input_dim, input_size)`` of a consumer whose weight slice ``member`` reads the input."""
    weight = getattr(module, param, None)
    if not isinstance(weight, torch.Tensor):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        in_channels = module.in_channels
        # A grouped conv's weight holds in/groups input columns, not the input channels themselves.
        if weight.shape[member.dim] != in_channels:
            return None
        return 1, in_channels
    if isinstance(module, nn.Linear):
        return -1, module.in_features
    # Other layers that read their last dim through a 2-D weight (e.g. transformers' Conv1D: (in, out)).
    if weight.ndim == 2:
        return -1, int(weight.shape[member.dim])
    return None


def _read_without_a_call(model: nn.Module, path: str, module: nn.Module) -> bool:
    """True for weights read where no pre-hook can mask the input: ``nn.MultiheadAttention`` reads its
    ``in_proj`` columns for query, key and value (a hook masks only the first) and its ``out_proj``
    weight directly, without calling ``out_proj``."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    parent, _, _ = path.rpartition(".")
    return bool(path) and isinstance(get_submodule(model, parent, "consumer_sites()"), nn.MultiheadAttention)


def consumer_sites(model: nn.Module, group: Any, who: str = "consumer_sites()") -> list[ConsumerSite]:
    """The modules reading ``group``'s units (its ``role == "in"`` members).

    Raises:
        ValueError: a consumer whose input layout cannot be masked (e.g. a grouped convolution's input
            columns, or a free parameter used in a functional op); the message names the module.
    """
    sites: dict[str, ConsumerSite] = {}
    for member in group.members:
        path, param = member_owner(member)
        if member.role != "in" or path in sites:
            continue
        module = get_submodule(model, path, who)
        layout = None if _read_without_a_call(model, path, module) else _input_layout(module, member, param)
        if layout is None:
            raise ValueError(
                f"{who}: group {group.id!r} is read by {path!r} "
                f"({type(module).__name__}.{param}, dim {member.dim}) whose input cannot be "
                "masked channel-wise; exclude it (ignored=...) or prune that group physically."
            )
        sites[path] = ConsumerSite(path, layout[0], layout[1], tuple(tuple(u) for u in member.index_map))
    return list(sites.values())


def site_input(args: tuple[Any, ...], kwargs: dict[str, Any], site: ConsumerSite) -> torch.Tensor:
    """The tensor a consumer reads (its first positional argument, or its only tensor keyword)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return tensors[0]
    raise ValueError(f"{site.module_name!r}: cannot find the input tensor to mask (args={len(args)}).")


def _replace_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], new: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args and isinstance(args[0], torch.Tensor):
        return (new, *args[1:]), kwargs
    key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return args, {**kwargs, key: new}


def _broadcast_shape(vec: torch.Tensor, x: torch.Tensor, dim: int) -> list[int]:
    shape = [1] * x.ndim
    shape[dim] = vec.numel()
    return shape


class _MaskHooks:
    """The hook bookkeeping both maskers share: per-module 0/1 vectors, their casts to each tensor's
    device/dtype, and hooks installed only while a module has a unit off.

    Subclasses say which site attribute holds a module's channel count (``size_attr``), install a
    module's hooks (:meth:`_install`) and may clear more caches (:meth:`_reset`).
    """

    size_attr = ""

    def __init__(self, model: nn.Module, sites: Mapping[str, list[Any]]) -> None:
        self.model = model
        self.sites = dict(sites)
        self._vectors: dict[str, torch.Tensor] = {}
        # Masks cast to each tensor's device/dtype once, not on every forward (no per-call H2D copy).
        self._cast: dict[tuple[Any, ...], torch.Tensor] = {}
        self._handles: dict[str, list[RemovableHandle]] = {}

    def _install(self, name: str) -> list[RemovableHandle]:  # pragma: no cover - subclasses define it
        raise NotImplementedError

    def _reset(self) -> None:
        self._cast = {}

    def _cast_mask(self, key: tuple[Any, ...], vec: torch.Tensor, like: torch.Tensor, shape: list[int]) -> torch.Tensor:
        mask = self._cast.get(key)
        if mask is None:
            mask = vec.to(device=like.device, dtype=like.dtype).view(shape)
            self._cast[key] = mask
        return mask

    def set_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Apply ``{group_id: bool[size]}``; groups not given keep every unit."""
        vectors = mask_vectors(masks, self.sites, self.size_attr)
        self._vectors = vectors
        self._reset()
        for name in list(self._handles):
            if name not in vectors:
                for handle in self._handles.pop(name):
                    handle.remove()
        for name in vectors:
            if name not in self._handles:
                self._handles[name] = self._install(name)

    @property
    def active(self) -> bool:
        """Whether any hook is installed."""
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook (the model computes with all units again)."""
        for handles in self._handles.values():
            for handle in handles:
                handle.remove()
        self._handles.clear()
        self._vectors = {}
        self._reset()


class InputMasker(_MaskHooks):
    """Multiplies consumer inputs by per-unit 0/1 masks through forward pre-hooks.

    Hooks exist only while at least one unit of a module's input is off; :meth:`remove` (or
    ``set_masks`` with all-ones masks) takes every hook away.

    Args:
        model: The model whose consumers are hooked.
        sites: ``{group_id: [ConsumerSite, ...]}`` from :func:`consumer_sites`.
    """

    size_attr = "input_size"

    def _install(self, name: str) -> list[RemovableHandle]:
        module = get_submodule(self.model, name, "InputMasker")
        return [module.register_forward_pre_hook(self._hook_for(name), with_kwargs=True)]

    def _hook_for(self, name: str) -> Any:
        site = next(s for sites in self.sites.values() for s in sites if s.module_name == name)

        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            vec = self._vectors.get(name)
            if vec is None:
                return None
            x = site_input(args, kwargs, site)
            if x.shape[site.input_dim] != vec.numel():
                raise ValueError(
                    f"InputMasker: {name!r} got {x.shape[site.input_dim]} channels on dim "
                    f"{site.input_dim} of input {tuple(x.shape)}, expected {vec.numel()}; the model "
                    "changed shape after the pruner was built. Build a new pruner."
                )
            mask = self._cast_mask((name, x.device, x.dtype), vec, x, _broadcast_shape(vec, x, site.input_dim))
            return _replace_input(args, kwargs, x * mask)

        return hook
