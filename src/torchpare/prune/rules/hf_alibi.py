"""Per-layer head pruning under ALiBi (BLOOM): each pruned attention reads the ALiBi rows of its kept heads.

BLOOM builds its ALiBi bias once, in ``BloomModel.forward``, for ``config.n_head`` heads, shaped
``(batch * n_head, 1, key_length)`` (heads inner), and hands the same tensor to every layer's
``BloomAttention``. Head ``h``'s slope depends on ``h`` and on ``n_head``, so a layer that keeps heads
``[0, 2, 3]`` must add rows ``0, 2, 3`` of that tensor: the kept heads keep their original slopes and
every layer may keep a different number of heads.

:class:`AlibiQKVRule` (the fused ``query_key_value`` rule plus ALiBi) does that with an
:class:`AlibiHeadSlicer`: a small picklable callable registered on the pruned attention module as a
forward pre-hook with kwargs. It takes the ``alibi`` argument built for the original heads and passes
on the rows of the kept ones. No transformers class is patched. The slicer lives in the module's own
hook table, so it survives ``copy.deepcopy`` and ``torch.save`` of the whole model; a saved pruning
record (:func:`torchpare.prune.save_pruned`) recreates it on replay (the rule's :meth:`~AlibiQKVRule.prune`
runs again), and :func:`torchpare.prune.save_pretrained` records the kept heads per layer
(:func:`alibi_heads`), which :func:`torchpare.prune.from_pretrained` restores (:func:`set_alibi_heads`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> attn = nn.Identity()
    >>> slicer = set_alibi_heads(attn, 4, [1, 3])
    >>> alibi = torch.arange(8.0).reshape(8, 1, 1)  # batch 2 x 4 heads
    >>> _, kwargs = slicer(attn, (torch.zeros(2, 5, 6),), {"alibi": alibi})
    >>> kwargs["alibi"].flatten().tolist()  # rows of heads 1 and 3, per batch item
    [1.0, 3.0, 5.0, 7.0]
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from torchpare.prune.rules.base import ROLE_IN, Call
from torchpare.prune.rules.hf_fused_attention import InterleavedQKVRule
from torchpare.prune.rules.hf_heads import _join

__all__ = ["AlibiHeadSlicer", "AlibiQKVRule", "alibi_heads", "set_alibi_heads", "AlibiHeadsError"]


class AlibiHeadsError(ValueError):
    """An ``alibi`` tensor does not fit the heads an ALiBi attention was built or pruned for."""


class AlibiHeadSlicer:
    """Forward pre-hook (with kwargs) passing a pruned attention the ALiBi rows of its kept heads.

    Args:
        levels: head indices (into the original heads) after each pruning step, the original
            ``range(n_heads)`` first; the last level is what the module has now. An ``alibi`` built for
            any level (the model's, for ``n_heads``; an already sliced one, e.g. the recorded input of
            a traced call) is accepted; its rows are mapped to the current heads.
        arg_index: position of ``alibi`` among the forward's arguments, when passed positionally.

    Attributes:
        hook_id: the id of this hook in the module's hook table (kept above the process's next hook
            id after unpickling, so a hook registered later cannot overwrite it).
    """

    def __init__(self, levels: Sequence[Sequence[int]], arg_index: int | None = None) -> None:
        self.levels = tuple(tuple(int(h) for h in level) for level in levels)
        self.arg_index = arg_index
        self.hook_id: int | None = None
        self._index: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def n_heads(self) -> int:
        """The number of heads the model builds ALiBi for (before pruning)."""
        return len(self.levels[0])

    @property
    def kept(self) -> tuple[int, ...]:
        """The original head indices the module keeps now."""
        return self.levels[-1]

    def extend(self, kept_now: Sequence[int]) -> None:
        """Record one more pruning step keeping ``kept_now`` (indices into the current heads)."""
        current = self.kept
        self.levels = (*self.levels, tuple(current[int(i)] for i in kept_now))
        self._index = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = {}  # device tensors: rebuilt on first use
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.hook_id is not None:  # a fresh process counts hook ids from 0 again
            RemovableHandle.next_id = max(RemovableHandle.next_id, self.hook_id + 1)

    def _rows(self, level: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (len(level), str(device))
        if key not in self._index:
            where = {h: i for i, h in enumerate(level)}
            self._index[key] = torch.tensor([where[h] for h in self.kept], dtype=torch.long, device=device)
        return self._index[key]

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        positional = "alibi" not in kwargs and self.arg_index is not None and len(args) > self.arg_index
        alibi = args[self.arg_index] if positional else kwargs.get("alibi")
        if not isinstance(alibi, torch.Tensor):
            return None
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor) or hidden.dim() < 1:
            raise AlibiHeadsError(
                f"{type(module).__name__}: the ALiBi head slicer needs hidden_states (batch first) to read "
                f"the batch size of alibi {tuple(alibi.shape)}."
            )
        batch, rows = int(hidden.shape[0]), int(alibi.shape[0])
        level = next((lv for lv in self.levels if batch * len(lv) == rows), None)
        if level is None:
            raise AlibiHeadsError(
                f"{type(module).__name__}: alibi of shape {tuple(alibi.shape)} does not fit batch {batch} "
                f"x {self.n_heads} heads (the model's) or x {len(self.kept)} (the heads this pruned layer "
                f"keeps: {list(self.kept)}); build it with the model's original head count."
            )
        if level == self.kept:
            return None
        per_item = alibi.reshape(batch, len(level), *alibi.shape[1:])
        sliced = per_item.index_select(1, self._rows(level, alibi.device))
        sliced = sliced.reshape(batch * len(self.kept), *alibi.shape[1:])
        if positional:
            return (*args[: self.arg_index], sliced, *args[self.arg_index + 1 :]), kwargs
        return args, {**kwargs, "alibi": sliced}


def _slicer_of(module: nn.Module) -> tuple[int, AlibiHeadSlicer] | None:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, AlibiHeadSlicer):
            return key, hook
    return None


def _alibi_position(module: nn.Module) -> int | None:
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("alibi") if "alibi" in params else None


def set_alibi_heads(module: nn.Module, n_heads: int, kept: Sequence[int]) -> AlibiHeadSlicer:
    """Make ``module`` read the ALiBi rows of original heads ``kept`` out of an ``alibi`` for ``n_heads``.

    Replaces any slicer already on ``module`` (one per module).

    Args:
        module: an attention module taking ``alibi`` (keyword or positional) and ``hidden_states``.
        n_heads: the head count the model builds ALiBi for.
        kept: the original indices of the heads the module keeps, in order.

    Returns:
        The slicer registered.

    Raises:
        AlibiHeadsError: ``kept`` is empty, unsorted or out of range.

    Example:
        >>> from torch import nn
        >>> set_alibi_heads(nn.Identity(), 8, [0, 5, 6]).kept
        (0, 5, 6)
    """
    kept = [int(h) for h in kept]
    if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= n_heads:
        raise AlibiHeadsError(
            f"set_alibi_heads(): kept heads {kept} of {type(module).__name__} must be sorted, distinct and "
            f"in range(0, {n_heads})."
        )
    found = _slicer_of(module)
    if found is not None:
        del module._forward_pre_hooks[found[0]]
        module._forward_pre_hooks_with_kwargs.pop(found[0], None)
    slicer = AlibiHeadSlicer([range(n_heads), kept], _alibi_position(module))
    return _register(module, slicer)


def _register(module: nn.Module, slicer: AlibiHeadSlicer) -> AlibiHeadSlicer:
    handle = module.register_forward_pre_hook(slicer, with_kwargs=True)
    slicer.hook_id = handle.id
    return slicer


def alibi_heads(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: {"n_heads": n, "kept": [original head indices]}}`` for every ALiBi-sliced module.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Identity())
        >>> _ = set_alibi_heads(net[0], 4, [0, 3])
        >>> alibi_heads(net)
        {'0': {'n_heads': 4, 'kept': [0, 3]}}
    """
    out = {}
    for name, module in model.named_modules():
        found = _slicer_of(module)
        if found is not None:
            out[name] = {"n_heads": found[1].n_heads, "kept": list(found[1].kept)}
    return out


def restore_alibi_heads(model: nn.Module, heads: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Register the slicers :func:`alibi_heads` listed (used by ``from_pretrained``).

    Raises:
        AlibiHeadsError: a malformed entry or a module ``model`` does not have.
    """
    for name, entry in heads.items():
        try:
            module = model.get_submodule(name)
            set_alibi_heads(module, int(entry["n_heads"]), [int(h) for h in entry["kept"]])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise AlibiHeadsError(f"{where}: bad ALiBi heads entry {name!r}: {entry!r} ({exc}).") from None


def alibi_problems(model: nn.Module) -> list[str]:
    """Why a plain config cannot rebuild ``model``'s ALiBi: one line per module reading kept heads' rows."""
    return [
        f"module {name} adds the ALiBi slopes of heads {entry['kept']} of {entry['n_heads']}, which a config "
        f"cannot state"
        for name, entry in alibi_heads(model).items()
    ]


class AlibiQKVRule(InterleavedQKVRule):
    """Heads of a fused ``[q_h | k_h | v_h]`` attention that adds an ALiBi bias built for all heads (BLOOM).

    Labels and slices as :class:`~torchpare.prune.rules.hf_fused_attention.InterleavedQKVRule`; removing
    heads also registers (or extends) the module's :class:`AlibiHeadSlicer`, so the module adds the
    ALiBi rows of the heads it keeps. A module whose ``config.alibi`` is ``False`` (Falcon without
    ALiBi) gets no slicer.
    """

    def matches(self, module: nn.Module) -> bool:
        return super().matches(module) and _alibi_position(module) is not None

    def propagate_heads(self, ctx: Any, call: Call) -> Any:
        """As the fused rule; the enclosing block's ``num_heads`` (BLOOM's, read by no forward) follows."""
        labels = super().propagate_heads(ctx, call)
        parent, _, _ = call.module_name.rpartition(".")
        hd = getattr(call.module, self.head_dim_attr)
        n_q = getattr(call.module, self.o).in_features // hd
        block = ctx.model.get_submodule(parent)
        if block is not call.module and getattr(block, "num_heads", None) == n_q:
            cols = ctx.param(_join(call.module_name, self.o), "weight", dim=1, role=ROLE_IN, unit="head")
            ctx.size_attribute(parent, "num_heads", cols.reshape(n_q, hd)[:, 0])
        return labels

    @staticmethod
    def _uses_alibi(module: nn.Module) -> bool:
        return getattr(getattr(module, "config", None), "alibi", True) is not False

    def prune(self, module: nn.Module, keep: Mapping[tuple[str, int], torch.Tensor]) -> None:
        """Slice as the fused rule does; when query heads are removed, slice ALiBi rows with them."""
        hd = getattr(module, self.head_dim_attr)
        n_before = getattr(module, self.o).in_features // hd
        cols = keep.get((f"{self.o}.weight", 1))
        if cols is None or not self._uses_alibi(module):
            super().prune(module, keep)
            return
        kept_cols = [int(c) for c in cols.tolist()]
        kept = sorted({c // hd for c in kept_cols})
        if len(kept_cols) != len(kept) * hd:  # checked before anything is sliced
            raise AlibiHeadsError(
                f"{type(self).__name__}: {type(module).__name__} would keep {len(kept_cols)} columns of "
                f"{self.o}.weight, not whole heads of {hd}; ALiBi rows can only follow whole heads."
            )
        super().prune(module, keep)
        if len(kept) == n_before:
            return
        found = _slicer_of(module)
        if found is None:
            _register(module, AlibiHeadSlicer([range(n_before), kept], _alibi_position(module)))
        else:
            found[1].extend(kept)
