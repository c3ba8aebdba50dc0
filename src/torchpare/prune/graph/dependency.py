"""``DependencyGraph``: trace a model once, find its channel groups, prune them physically.

The contract: removing unit ``i`` of a group removes ``member.index_map[i]`` along ``member.dim`` from
every member, and the pruned model equals the original in which those units are zeroed at their
consumers (``role == "in"`` slices) — checked by :func:`torchpare.prune.verify_pruning`.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.prune.graph.group import ChannelGroup, build_groups
from torchpare.prune.graph.placement import check_placement
from torchpare.prune.graph.report import format_report, headless_attention
from torchpare.prune.graph.trace import trace_labels
from torchpare.prune.ignored import resolve_ignored
from torchpare.prune.labels import LabelContext
from torchpare.prune.surgery import apply_plan

__all__ = ["DependencyGraph", "Plan"]

Plan = Mapping[Any, Iterable[int]]


class DependencyGraph:
    """Channel groups of a model, found by tracing one forward pass.

    Build with :meth:`build`; do not call the constructor directly.

    Attributes:
        model: the traced model (pruned in place by :meth:`prune`).
        example_inputs: the inputs used for tracing (re-used to rebuild after pruning).
        ignored: names of modules never pruned on their output side.
        headless: attention-like modules that got no head unit, with the reason (each class is warned
            about once per build, and ``report()`` lists them).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, ignored: tuple[str, ...]) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self.ignored = ignored
        self.ctx: LabelContext
        self.headless: list[Any] = []  # attention-like modules without head units (graph.report())
        self._groups: list[ChannelGroup] = []
        self._by_id: dict[str, ChannelGroup] = {}

    @classmethod
    def build(
        cls, model: nn.Module, example_inputs: Any, ignored: Iterable[str | nn.Module] = ()
    ) -> DependencyGraph:
        """Trace ``model`` on ``example_inputs`` and compute its channel groups.

        Args:
            model: any ``nn.Module``; it runs once in eval mode under ``no_grad`` (modes restored).
            example_inputs: a tensor, a tuple of positional arguments, or a dict of keyword arguments
                (as Hugging Face models take). Keep it small: labels mirror every activation.
            ignored: modules (names or objects) whose outputs are never pruned, e.g. ``["head.fc"]``.
                A name covers the module's descendants. The model's outputs are always kept.

        Returns:
            The graph.

        Raises:
            IgnoredModuleError: an ignored name or module is not a module of ``model`` (names the
                closest ones; also a ``KeyError`` and a ``ValueError``).
            TypeError: ``model`` is not an ``nn.Module``, or an ignored entry is neither a name nor
                a module.
            ModelPlacementError: (a ``ValueError``) ``model`` is wrapped in ``DistributedDataParallel``
                / ``DataParallel`` (build on ``model.module``), holds FSDP-sharded modules, or has
                weights on the ``meta`` device next to real ones; see
                :func:`~torchpare.prune.graph.placement.check_placement`.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> g = DependencyGraph.build(net, torch.randn(1, 4))
            >>> [(grp.id, grp.size) for grp in g.groups()]
            [('0', 8)]
        """
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"DependencyGraph.build(): model must be an nn.Module, got {type(model).__name__}."
            )
        check_placement(model, "DependencyGraph.build()")
        names = resolve_ignored(model, ignored, who="DependencyGraph.build()")
        graph = cls(model, example_inputs, tuple(names))
        graph._trace()
        graph._warn_headless()
        return graph

    def _warn_headless(self) -> None:
        """Warn once per class about attention-like modules that got no head unit (never silent)."""
        by_class: dict[str, list[Any]] = {}
        for h in self.headless:
            by_class.setdefault(h.class_name, []).append(h)
        for cls_name, found in by_class.items():
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            warnings.warn(
                f"DependencyGraph.build(): {cls_name} at {found[0].module_name!r}{more} looks like attention but "
                f"gets no head unit, so its heads are not pruned: {found[0].reason}. See graph.report().",
                UserWarning,
                stacklevel=3,
            )

    def _trace(self) -> None:
        # The label bookkeeping allocates many small tuples; a full GC pass in the middle can cost
        # more than the whole trace, so collection is paused (and restored) around it.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._trace_unpaused()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _trace_unpaused(self) -> None:
        ctx = LabelContext(self.model)
        trace_labels(self.model, self.example_inputs, ctx)
        for ig in self.ignored:
            reason = f"ignored module {ig!r}"
            for (module, _p, _d, role), info in ctx.slices.items():
                if role == "out" and _under(module, ig):
                    ctx.keep_whole(torch.arange(info.start, info.start + info.size), reason)
            for name, (start, shape) in ctx.free.items():
                if _under(name.rpartition(".")[0], ig):
                    ctx.keep_whole(torch.arange(start, start + int(torch.Size(shape).numel())), reason)
        self.ctx = ctx
        self._groups = build_groups(ctx)
        self.headless = headless_attention(self)  # before release(): it reuses the trace's module walk
        ctx.release()
        self._by_id = {g.id: g for g in self._groups}

    # ------------------------------------------------------------------ queries
    def groups(self) -> list[ChannelGroup]:
        """Prunable groups (not blocked, not ignored), in trace order."""
        return [g for g in self._groups if g.blocked_by is None]

    def all_groups(self) -> list[ChannelGroup]:
        """All groups, blocked ones included (``group.blocked_by`` says why)."""
        return list(self._groups)

    def group(self, group_id: str | ChannelGroup) -> ChannelGroup:
        """The group with ``group_id``.

        Raises:
            KeyError: no such id (the message names the closest ids).
        """
        gid = group_id.id if isinstance(group_id, ChannelGroup) else group_id
        if gid not in self._by_id:
            raise KeyError(
                f"DependencyGraph.group({gid!r}): no such group in {type(self.model).__name__}"
                f"{did_you_mean(str(gid), self._by_id)}. Use ids from graph.groups()."
            )
        return self._by_id[gid]

    def report(self) -> str:
        """Human-readable summary: groups, sizes, exactness, and why blocked groups are blocked."""
        return format_report(self)

    # ------------------------------------------------------------------ pruning
    def normalize_plan(self, plan: Plan) -> dict[str, list[int]]:
        """Validate ``plan`` (group or id -> unit indices to remove) into ``{id: sorted indices}``.

        Raises:
            KeyError: unknown group id.
            ValueError: blocked group, index out of range, duplicate-free removal of every unit.
        """
        if not isinstance(plan, Mapping):
            raise TypeError(
                f"DependencyGraph.prune(): plan must be a mapping group id -> indices, "
                f"got {type(plan).__name__}."
            )
        out: dict[str, list[int]] = {}
        for key, indices in plan.items():
            g = self.group(key)
            if isinstance(indices, torch.Tensor):
                indices = indices.reshape(-1).tolist()
            idx = sorted({int(i) for i in indices})
            if g.blocked_by is not None:
                raise ValueError(
                    f"DependencyGraph.prune(): group {g.id!r} is blocked ({g.blocked_by}); "
                    f"it cannot be pruned. See graph.report()."
                )
            bad = [i for i in idx if i < 0 or i >= g.size]
            if bad:
                raise ValueError(
                    f"DependencyGraph.prune(): group {g.id!r} has {g.size} {g.unit}s; "
                    f"indices {bad[:5]} are out of range [0, {g.size})."
                )
            if len(idx) >= g.size:
                raise ValueError(
                    f"DependencyGraph.prune(): plan removes all {g.size} {g.unit}s of group "
                    f"{g.id!r}; keep at least one."
                )
            if idx:
                out[g.id] = idx
        return out

    def prune(self, plan: Plan) -> None:
        """Remove the planned units in place, then rebuild the graph (same ids, smaller sizes).

        A front door to :func:`torchpare.prune.surgery.apply_plan` (``retrace=True``); it does not
        add to the model's pruning record: use :func:`torchpare.prune.prune_by_plan` to prune a model
        that :func:`~torchpare.prune.save_pruned` can save.

        Args:
            plan: ``{group_id or ChannelGroup: indices of units to remove}``.

        Raises:
            KeyError, ValueError: see :meth:`normalize_plan`; nothing is changed in that case.
            RuntimeError: the pruned model fails its forward (a size it reads from a config or a
                hard-coded int did not follow the pruning); the model is left pruned.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> g = DependencyGraph.build(net, torch.randn(1, 4))
            >>> g.prune({"0": [0, 1, 2]})
            >>> net[0].out_features, net[2].in_features, g.group("0").size
            (5, 5, 5)
        """
        apply_plan(self, plan, retrace=True)

    def __repr__(self) -> str:
        return (
            f"DependencyGraph({type(self.model).__name__}: {len(self.groups())} prunable groups, "
            f"{len(self._groups) - len(self.groups())} blocked)"
        )


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")
