"""Per-expert widths for mixture-of-experts layers: :func:`split_experts` and :func:`fuse_experts`.

transformers 5.x stores the experts of a layer fused (``gate_up_proj (E, 2I, H)``, ``down_proj (E, H, I)``),
one width for all of them. :func:`split_experts` replaces each such module by a
:class:`~torchpare.prune.rules.split_experts.SplitExperts` holding every expert's weights on their own
(the same forward, routing and activation), so each expert's hidden units become their own group and
:func:`torchpare.prune.prune` can give busy experts more width. :func:`fuse_experts` puts back the fused
module wherever all experts of a layer kept the same width (and transformers' grouped-matmul kernel
accepts it: rows of 16 bytes). ``prune()`` does both, so a model keeps the fused layout unless its
experts really differ. Both are recorded in the pruning record (``"restructure"`` steps), so
:func:`~torchpare.prune.save_pruned` / :func:`~torchpare.prune.load_pruned` and
:func:`~torchpare.prune.save_pretrained` / :func:`~torchpare.prune.from_pretrained` rebuild them.

Why the fused layout needed blocks of 8 units: transformers runs fused experts through
``torch.nn.functional.grouped_mm`` by default (``experts_implementation="grouped_mm"``, chosen on CPU
too for torch > 2.10), which refuses operands whose strides are not multiples of 16 bytes
(``RuntimeError: strides should be multiple of 16 bytes``): the transposed ``down_proj`` has stride
``I``, so ``I`` must be a multiple of 4 (float32) or 8 (16-bit). Split experts run ``F.linear`` per
expert and take any width.

Example:
    >>> from torchpare.zoo.hf import hf_tiny
    >>> model, inputs = hf_tiny("mixtral")
    >>> split_experts(model)
    ['model.layers.0.mlp.experts', 'model.layers.1.mlp.experts']
    >>> model.model.layers[0].mlp.experts.widths
    [64, 64]
    >>> fuse_experts(model)
    ['model.layers.0.mlp.experts', 'model.layers.1.mlp.experts']
    >>> type(model.model.layers[0].mlp.experts).__name__
    'MixtralExperts'
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.prune.history import PruningFileError, pruning_record
from torchpare.prune.rules.hf_moe import FusedExpertsRule, _sizes
from torchpare.prune.rules.split_experts import SplitExperts

__all__ = ["split_experts", "fuse_experts", "unsplittable_reason", "replay_restructure", "RESTRUCTURE_OPS"]

RESTRUCTURE_OPS = ("split_experts", "fuse_experts")
_FLAGS = {"has_bias": False, "is_transposed": False, "has_gate": True, "is_concatenated": True,
          "has_post_expert_norm": False, "_is_expert_parallel": False}


def unsplittable_reason(module: nn.Module, check: bool = True) -> str | None:
    """Why fused experts ``module`` cannot become a :class:`SplitExperts` (``None`` when it can).

    Structure: exactly ``gate_up_proj (E, 2I, H)`` and ``down_proj (E, H, I)``, no bias, concatenated
    gate/up halves, transformers' default gate ``act_fn(gate) * up`` and an ``act_fn``. With ``check``
    (and real weights), both layouts are also run on the same random routing and must agree.

    Example:
        >>> unsplittable_reason(nn.Linear(2, 2))
        'not fused experts (gate_up_proj (E, 2I, H) and down_proj (E, H, I))'
    """
    if isinstance(module, SplitExperts) or _sizes(module) is None:
        return "not fused experts (gate_up_proj (E, 2I, H) and down_proj (E, H, I))"
    for flag, value in _FLAGS.items():
        if getattr(module, flag, value) != value:
            return f"{flag}={getattr(module, flag)!r} (only {value!r} is handled)"
    gate = getattr(type(module), "_apply_gate", None)
    if gate is not None and getattr(gate, "__qualname__", "") != "_default_apply_gate":
        return f"{type(module).__name__} has its own gate ({gate.__qualname__})"
    if not callable(getattr(module, "act_fn", None)):
        return "no act_fn"
    if check and not module.down_proj.is_meta:
        split = _split_one(module)
        gen = torch.Generator().manual_seed(0)
        e, h, _ = _sizes(module)  # type: ignore[misc]
        p = module.down_proj
        x = torch.randn(7, h, generator=gen).to(p.device, p.dtype)
        k = min(2, e)
        index = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(7)]).to(p.device)
        weights = torch.rand(7, k, generator=gen).to(p.device, p.dtype)
        with torch.no_grad():
            try:
                ref, got = module(x, index, weights), split(x, index, weights)
            except Exception as exc:  # noqa: BLE001 - any failure is the verdict
                return f"its forward could not be compared with the split one ({type(exc).__name__}: {exc})"
        tol = 1e-4 if p.element_size() >= 4 else 3e-2  # 16-bit kernels round differently
        if not isinstance(ref, torch.Tensor) or ref.shape != got.shape or not torch.allclose(
            ref.double(), got.double(), rtol=10 * tol, atol=tol * max(float(ref.abs().max()), 1.0)
        ):
            return "its forward differs from transformers' experts loop"
    return None


def _split_one(module: nn.Module) -> SplitExperts:
    e, h, i = _sizes(module)  # type: ignore[misc]
    gu, down = module.gate_up_proj, module.down_proj
    split = SplitExperts(e, h, [i] * e, module.act_fn, device=gu.device, dtype=gu.dtype)
    with torch.no_grad():
        for k in range(e):
            expert = split.expert(k)
            expert.gate_up_proj = nn.Parameter(gu[k].detach().clone(), requires_grad=gu.requires_grad)
            expert.down_proj = nn.Parameter(down[k].detach().clone(), requires_grad=down.requires_grad)
    template = copy.copy(module)  # shallow: shares config and act_fn; holds no tensors
    template._parameters = {}
    template._buffers = dict(module._buffers)
    template._modules = dict(module._modules)
    object.__setattr__(split, "fused_template", template)
    split.train(module.training)
    return split


def _fusable_reason(module: SplitExperts) -> str | None:
    """Why ``module`` must stay split (``None``: it can be fused back)."""
    if module.fused_template is None:
        return "it was not made from a fused module"
    widths = module.widths
    if len(set(widths)) > 1:
        return f"its experts have different widths {widths}"
    config = getattr(module.fused_template, "config", None)
    impl = getattr(config, "_experts_implementation", None)
    size = module.expert(0).down_proj.element_size()
    if impl not in ("eager", "batched_mm") and (widths[0] * size % 16 or module.hidden_dim * size % 16):
        return (
            f"transformers' {impl!r} experts kernel needs rows of 16 bytes, and width {widths[0]} / "
            f"hidden {module.hidden_dim} of {module.expert(0).down_proj.dtype} are not"
        )
    return None


def _fuse_one(module: SplitExperts) -> nn.Module:
    fused = copy.copy(module.fused_template)
    fused._parameters = {}
    fused._modules = dict(module.fused_template._modules)
    experts = [module.expert(e) for e in range(module.num_experts)]
    with torch.no_grad():
        gu = torch.stack([x.gate_up_proj.detach() for x in experts])
        down = torch.stack([x.down_proj.detach() for x in experts])
    grad = experts[0].gate_up_proj.requires_grad
    fused.gate_up_proj = nn.Parameter(gu, requires_grad=grad)
    fused.down_proj = nn.Parameter(down, requires_grad=grad)
    fused.act_fn = module.act_fn
    FusedExpertsRule().update(fused)
    fused.train(module.training)
    return fused


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = get_submodule(model, parent_name, who="split_experts") if parent_name else model
    setattr(parent, child, new)


def _covered(name: str, skip: Iterable[str]) -> bool:
    return any(name == s or name.startswith(f"{s}.") for s in skip)


def _record(model: nn.Module, op: str, names: list[str]) -> None:
    record = pruning_record(model)
    if record is None or not names:
        return
    record["steps"].append(
        {"ignored": [], "plan": {}, "slices": [], "attributes": [], "restructure": {"op": op, "modules": names}}
    )


def split_experts(
    model: nn.Module,
    modules: Iterable[str] | None = None,
    *,
    skip: Iterable[str] = (),
    check: bool = True,
    warn: bool = False,
) -> list[str]:
    """Replace fused experts modules of ``model`` by :class:`SplitExperts` (same outputs), in place.

    Each expert's hidden units then form their own group of ``DependencyGraph.build(model, ...)``
    (``"<experts module>.<e>"``). When the model carries a pruning record (it was pruned before, or
    :func:`torchpare.prune.prune` is pruning it) the change is recorded, so saved files rebuild it.

    Args:
        model: Any model (only fused experts modules are changed; an ``nn.Linear`` stays as it is).
        modules: Names of the modules to split (default: every fused experts module of a transformers
            class that can be).
        skip: Names of modules to leave fused (with their descendants), e.g. ignored modules.
        check: Also compare each class's forward with the split one on random routing (once per module).
        warn: Warn about fused experts that cannot be split (they keep one width for all experts).

    Returns:
        The names of the modules split.

    Raises:
        ValueError: a module named in ``modules`` is not splittable fused experts (the reason is given).

    Example:
        >>> split_experts(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    named = dict(model.named_modules())
    wanted = list(modules) if modules is not None else None
    candidates = wanted if wanted is not None else [
        n for n, m in named.items() if _sizes(m) is not None and type(m).__module__.startswith("transformers.")
    ]
    done = []
    skip = list(skip)
    for name in candidates:
        module = named.get(name)
        if module is None or _covered(name, skip):
            if wanted is not None and module is None:
                raise ValueError(f"split_experts(): {type(model).__name__} has no module {name!r}.")
            continue
        reason = unsplittable_reason(module, check)
        if reason is not None:
            if wanted is not None:
                raise ValueError(f"split_experts(): {type(module).__name__} at {name!r} cannot be split: {reason}.")
            if warn and _sizes(module) is not None:
                warnings.warn(
                    f"{type(module).__name__} at {name!r} keeps one width for all its experts ({reason}); "
                    "its hidden units are pruned in blocks of 8 for every expert at once.",
                    UserWarning,
                    stacklevel=2,
                )
            continue
        _replace(model, name, _split_one(module))
        done.append(name)
    _record(model, "split_experts", done)
    return done


def fuse_experts(model: nn.Module, modules: Iterable[str] | None = None) -> list[str]:
    """Put back the fused module for each :class:`SplitExperts` whose experts all have the same width.

    Modules that must stay split (different widths, or a width transformers' grouped-matmul kernel
    refuses: rows of 16 bytes) are left as they are. Recorded like :func:`split_experts`.

    Args:
        model: The model (changed in place).
        modules: Names of the modules to fuse (default: every ``SplitExperts`` that can be).

    Returns:
        The names of the modules fused.

    Raises:
        ValueError: a module named in ``modules`` cannot be fused (the reason is given).

    Example:
        >>> fuse_experts(nn.Sequential(nn.Linear(2, 2)))
        []
    """
    named = dict(model.named_modules())
    wanted = list(modules) if modules is not None else None
    candidates = wanted if wanted is not None else [n for n, m in named.items() if isinstance(m, SplitExperts)]
    done = []
    for name in candidates:
        module = named.get(name)
        if not isinstance(module, SplitExperts):
            if wanted is not None:
                raise ValueError(f"fuse_experts(): {name!r} is not a SplitExperts module of {type(model).__name__}.")
            continue
        reason = _fusable_reason(module)
        if reason is not None:
            if wanted is not None:
                raise ValueError(f"fuse_experts(): SplitExperts at {name!r} cannot be fused: {reason}.")
            continue
        _replace(model, name, _fuse_one(module))
        done.append(name)
    _record(model, "fuse_experts", done)
    return done


def split_reasons(model: nn.Module) -> list[str]:
    """One line per :class:`SplitExperts` of ``model``: why it has no fused (plain-format) layout."""
    return [
        f"{name}: experts of their own widths {m.widths} (a fused 3-D layout holds one width; "
        f"{_fusable_reason(m) or 'fusable'})"
        for name, m in model.named_modules()
        if isinstance(m, SplitExperts)
    ]


def replay_restructure(model: nn.Module, step: Mapping[str, Any], where: str = "load_pruned()") -> None:
    """Replay a recorded ``"restructure"`` entry (``{"op": ..., "modules": [...]}``) on ``model``.

    Raises:
        PruningFileError: an unknown op, or modules that do not fit.
    """
    op, names = step.get("op"), step.get("modules")
    if op not in RESTRUCTURE_OPS or not isinstance(names, list):
        raise PruningFileError(f"{where}: unknown restructure step {dict(step)!r}; known ops: {RESTRUCTURE_OPS}.")
    try:
        if op == "split_experts":
            split_experts(model, [str(n) for n in names], check=False)
        else:
            fuse_experts(model, [str(n) for n in names])
    except ValueError as exc:
        raise PruningFileError(f"{where}: {exc}") from exc


__all__ += ["split_reasons"]
