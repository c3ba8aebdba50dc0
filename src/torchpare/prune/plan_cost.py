"""The parameters and FLOPs of a pruning plan, computed from the graph without a trial copy or forward.

:func:`~torchpare.prune.prune` searches how many units to remove so that the pruned model lands on a
FLOPs or parameter target. Counting every candidate for real costs a model copy, a surgery and a
counted forward each; :class:`PlanCost` answers the same question from the dependency graph:

* **Parameters, exactly.** Each group member slices known indices of one parameter along one dim, so
  a plan's removed indices per ``(parameter, dim)`` are known; the parameters after pruning are the
  products of the kept sizes (a tied parameter counts once, and the indices its names remove are
  merged as the surgery merges them).
* **FLOPs, from one counted forward of the unpruned model** (:func:`count_by_module`): the FLOPs
  ``FlopCounterMode`` attributes to each module itself (its children's subtracted). A layer's own
  matmul or convolution costs ``2 x rows x`` its weight's entries, and channel pruning changes no
  spatial size or token count, so those FLOPs scale with the weight's kept entries: exact for
  ``Linear``, ``Conv`` (grouped and depthwise too), GPT-2's ``Conv1D``. The FLOPs a module computes
  between activations (attention scores and weighted values) scale with the kept fraction of its
  head groups: exact when no channel group inside the attention module changes a head's width.
  ``nn.MultiheadAttention`` is counted on its unfused path, whose projections and attention are
  separate ops. :attr:`PlanCost.exact_flops` says whether every FLOP of the model is of these exact
  kinds (not with routed experts, whose rows move with the router). What the model cannot see is a
  matmul whose *rows* are pruned channels (a token-mixing layer applied across channels): there the
  FLOPs are an estimate that the real count of the chosen plan corrects.

``prune()`` searches with this model and then counts the chosen plan once for real; if the estimate
missed, it corrects the goal by the observed ratio and searches again (see ``prune/budget.py``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchpare.prune.counting import counted

if TYPE_CHECKING:
    from torchpare.prune.graph import DependencyGraph

__all__ = ["ModuleFlops", "PlanCost", "count_by_module"]

# Ops whose FLOPs are 2 x rows x (the weight's entries) when a module runs them on its own weight;
# bmm too in nn.MultiheadAttention (its unfused path projects with bmm), elsewhere bmm and the
# attention kernels (scaled dot product) multiply activations: attention scores and weighted values.
_WEIGHT_OPS = frozenset({"mm", "addmm", "convolution", "_convolution", "_grouped_mm"})
# Of those, the ones a module's own leaf weight makes exactly proportional to its kept entries.
_EXACT_OPS = frozenset({"mm", "addmm", "convolution", "_convolution"})


@dataclass
class ModuleFlops:
    """One counted forward, broken down by module.

    Attributes:
        totals: ``{"params": int, "flops": int}`` as :func:`~torchpare.prune.count` returns them.
        by_module: ``{module name: {op name: FLOPs}}``: the FLOPs each module computes itself (its
            children's subtracted), ``""`` for the root.
        outside: FLOPs no module of the model was running (counted as they are).
    """

    totals: dict[str, int]
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)
    outside: int = 0


def count_by_module(model: nn.Module, example_inputs: Any) -> ModuleFlops:
    """Count ``model`` as :func:`~torchpare.prune.count` does, with each module's own FLOPs.

    One forward under ``FlopCounterMode``; its module tracker gives every called module's FLOPs
    including its children's, from which each module's own share is the difference.

    Args:
        model: Any ``nn.Module`` (not modified).
        example_inputs: A tensor, a tuple of positional arguments or a dict of keyword arguments.

    Returns:
        The :class:`ModuleFlops`; ``sum`` of every module's own FLOPs plus ``outside`` equals
        ``totals["flops"]``.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> counts = count_by_module(net, torch.zeros(3, 4))
        >>> counts.totals, counts.by_module
        ({'params': 58, 'flops': 288}, {'': {}, '0': {'addmm': 192}, '2': {'addmm': 96}})
    """
    # nn.MultiheadAttention's fused eval kernel is one op (projections and attention together); its
    # unfused path counts the same total in separate ops, which scale separately under pruning.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        params, counter = counted(model, example_inputs, who="count_by_module()")
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_name: dict[str, dict[str, int]] = {}
    for name, ops in counts.items():
        if name == root:
            per_name[""] = {getattr(op, "__name__", str(op)): int(v) for op, v in ops.items()}
        elif name.startswith(root + "."):
            per_name[name[len(root) + 1 :]] = {
                getattr(op, "__name__", str(op)): int(v) for op, v in ops.items()
            }
    # A module's own FLOPs: its count minus the counts of the nearest called modules below it.
    own = {name: dict(ops) for name, ops in per_name.items()}
    for name, ops in per_name.items():
        if name == "":
            continue
        parent = name
        while parent:
            parent = parent.rpartition(".")[0] if "." in parent else ""
            if parent in per_name:
                break
        below = own.setdefault(parent, {})
        for op, v in ops.items():
            below[op] = below.get(op, 0) - v
    total = int(counter.get_total_flops())
    outside = total - sum(per_name.get("", {}).values())
    by_module = {}
    for name, ops in sorted(own.items()):  # the tracker's order follows string hashes: sort it
        try:
            _ = model.get_submodule(name) if name else model
        except AttributeError:  # a tracked name that is no path of the model: its FLOPs stay unscaled
            outside += sum(ops.values())
            continue
        by_module[name] = {op: v for op, v in ops.items() if v}
    return ModuleFlops({"params": params, "flops": total}, by_module, outside)


@dataclass
class _Term:
    """FLOPs that scale with the kept entries of ``tensors`` or the kept fraction of ``groups``."""

    flops: int
    tensors: tuple[int, ...] = ()
    entries: int = 1  # the tensors' entries before pruning
    groups: tuple[str, ...] = ()
    exact: bool = False


class PlanCost:
    """Parameters (exact) and FLOPs (see :attr:`exact_flops`) of ``graph.model`` after a plan.

    Args:
        graph: The model's dependency graph (its groups give a plan's meaning).
        flops: :func:`count_by_module` of ``graph.model`` on the inputs the FLOPs are counted on.

    Example:
        >>> import torch
        >>> from torchpare.prune import DependencyGraph, apply_plan, count
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> graph = DependencyGraph.build(net, x)
        >>> cost = PlanCost(graph, count_by_module(net, x))
        >>> estimate = cost({"0": [0, 1, 2]})
        >>> _ = apply_plan(graph, {"0": [0, 1, 2]})
        >>> estimate == count(net, x), cost.exact_flops
        (True, True)
    """

    def __init__(self, graph: DependencyGraph, flops: ModuleFlops) -> None:
        model = graph.model
        tensor_of: dict[tuple[str, str], int] = {}
        self._shapes: dict[int, tuple[int, ...]] = {}
        for full, p in model.named_parameters(remove_duplicate=False):
            owner, _, pname = full.rpartition(".")
            tensor_of[(owner, pname)] = id(p)
            self._shapes[id(p)] = tuple(int(s) for s in p.shape)
        self._numel = {tid: math.prod(shape) for tid, shape in self._shapes.items()}
        self.params_before = sum(self._numel.values())
        self.sizes = {g.id: g.size for g in graph.groups()}

        # Which indices of which (parameter, dim) each group's units remove.
        parts: dict[tuple[int, int], list[tuple[str, Any]]] = defaultdict(list)
        for g in graph.groups():
            for m in g.members:
                tid = tensor_of.get((m.module_name, m.param_name))
                if tid is None:  # a buffer (running statistics): no parameter
                    continue
                entry = parts[(tid, m.dim)]
                if not any(gid == g.id and imap == m.index_map for gid, imap in entry):
                    entry.append((g.id, m.index_map))
        self._keys = list(parts)
        self._fast: dict[str, list[tuple[int, int | None, tuple[int, ...]]]] = defaultdict(list)
        self._slow: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for k, entry in enumerate(parts.values()):
            seen: set[int] = set()
            listed = 0
            for _, imap in entry:
                for unit in imap:
                    seen.update(unit)
                    listed += len(unit)
            if listed == len(seen):  # disjoint: a removed count is a sum of unit widths
                for gid, imap in entry:
                    widths = tuple(len(unit) for unit in imap)
                    uniform = widths[0] if widths and all(w == widths[0] for w in widths) else None
                    self._fast[gid].append((k, uniform, widths))
            else:  # overlapping slices of one tensor: merged as sets, as the surgery merges them
                for gid, imap in entry:
                    self._slow[gid].append((k, imap))
        self._touched = sorted({tid for tid, _ in self._keys})

        # FLOPs terms, one per module and op kind.
        self._terms: list[_Term] = []
        self.flops_before = int(flops.totals["flops"])
        constant = int(flops.outside)
        heads_in = _head_groups_by_module(graph, flops.by_module)
        channel_prefixes = [_common_prefix(g) for g in graph.groups() if g.unit == "channel"]
        for name, ops in flops.by_module.items():
            if not ops:
                continue
            try:
                module = model.get_submodule(name) if name else model
            except AttributeError:
                constant += sum(ops.values())
                continue
            weights = tuple(tid for tid in _own_weights(module, flops.by_module, name) if tid in self._shapes)
            heads = heads_in.get(name, ())
            mha = isinstance(module, nn.MultiheadAttention)
            weight_ops = _WEIGHT_OPS | {"bmm"} if mha else _WEIGHT_OPS
            # attention FLOPs scale exactly with the kept heads when no channel group inside the
            # module (a per-head width) changes them too
            heads_only = not any(p == name or p.startswith(name + ".") for p in channel_prefixes if p)
            for op, value in ops.items():
                if weights and (op in weight_ops or not heads):
                    entries = max(1, sum(self._numel[t] for t in weights))
                    exact = op in _EXACT_OPS or (mha and op == "bmm")
                    self._terms.append(_Term(value, weights, entries, exact=exact))
                elif heads:
                    self._terms.append(_Term(value, groups=heads, exact=heads_only))
                else:
                    constant += value
        self._constant = constant
        # exact when every FLOP is a layer's own matmul/convolution or attention over whole heads (and
        # no FLOP is left unscaled while some group could change it)
        # routed experts (mixture of experts) see as many rows as the router sends them, which moves
        # with any width pruned before the router: their FLOPs depend on the data
        self.exact_flops = (
            all(t.exact for t in self._terms if t.flops) and constant == 0 and not _routes(model)
        )

    def __call__(self, plan: Mapping[str, Any]) -> dict[str, int | float]:
        """``{"params": int, "flops": int or float}`` of the model after removing ``plan``'s units
        (FLOPs are an int when every scaled count is whole).

        Args:
            plan: ``{group id: unit indices to remove}`` (validated as ``DependencyGraph.normalize_plan``
                validates it before a surgery; here only the ids are checked).

        Raises:
            KeyError: a group id that is no prunable group of the graph.
        """
        removed = [0] * len(self._keys)
        merged: dict[int, set[int]] = {}
        for gid, units in plan.items():
            if gid not in self.sizes:
                raise KeyError(f"PlanCost: no prunable group {gid!r}; use ids from graph.groups().")
            units = list(units)
            if not units:
                continue
            for k, uniform, widths in self._fast.get(gid, ()):
                removed[k] += uniform * len(units) if uniform is not None else sum(widths[u] for u in units)
            for k, imap in self._slow.get(gid, ()):
                target = merged.setdefault(k, set())
                for u in units:
                    target.update(imap[u])
        for k, indices in merged.items():
            removed[k] += len(indices)
        shapes = {tid: list(self._shapes[tid]) for tid in self._touched}
        for (tid, dim), n in zip(self._keys, removed, strict=True):
            if n:
                shapes[tid][dim] -= n
        kept = {tid: math.prod(shape) for tid, shape in shapes.items()}
        params = self.params_before - sum(self._numel[tid] - kept[tid] for tid in self._touched)
        # integer arithmetic where the scaled count is whole (a layer's FLOPs are 2 x rows x its
        # entries), so an exact estimate equals the counted FLOPs bit for bit
        whole, rest = self._constant, 0.0
        for term in self._terms:
            if term.tensors:
                num = term.flops * sum(kept.get(t, self._numel[t]) for t in term.tensors)
                den = term.entries
            else:
                num, den = term.flops, 1
                for gid in term.groups:
                    num *= self.sizes[gid] - len(plan.get(gid, ()))
                    den *= self.sizes[gid]
            if num % den == 0:
                whole += num // den
            else:
                rest += num / den
        return {"params": int(params), "flops": whole + rest if rest else whole}


def _own_weights(module: nn.Module, called: Mapping[str, Any], name: str) -> list[int]:
    """Ids of the matrices ``module`` multiplies by itself: its own parameters of 2+ dims, and those of
    children that never ran as modules (``nn.MultiheadAttention`` applies ``out_proj.weight`` with
    ``F.linear``); embeddings (looked up, not multiplied) are left out."""
    ids = [id(p) for n, p in module.named_parameters(recurse=False) if _matrix(n, p)]
    for child_name, child in module.named_children():
        path = f"{name}.{child_name}" if name else child_name
        if path in called or isinstance(child, nn.Embedding):
            continue
        ids += [id(p) for n, p in child.named_parameters() if _matrix(n.rpartition(".")[2], p)]
    return ids


def _matrix(name: str, p: torch.Tensor) -> bool:
    """A ``weight``, or a parameter with two dims of more than one entry (not a per-head scale such
    as Swin-V2's ``logit_scale`` of shape ``(heads, 1, 1)``)."""
    return p.dim() >= 2 and (name == "weight" or sum(int(s) > 1 for s in p.shape) >= 2)


def _head_groups_by_module(graph: DependencyGraph, names: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The head groups (units other than channels) whose attention each counted module computes: a
    group belongs to its members' modules and their ancestors up to the innermost module holding all
    of them (BERT's heads, with members under ``attention``, scale the scores ``attention.self``
    computes; T5's heads shared by every self-attention of a stack scale those, not the cross
    attention beside them). Only a module's FLOPs between activations use them."""
    out: dict[str, list[str]] = defaultdict(list)
    for g in graph.groups():
        if g.unit == "channel":
            continue
        prefix = _common_prefix(g)
        found: set[str] = set()
        for m in g.members:
            name = m.module_name
            while True:
                if name in names:
                    found.add(name)
                if name == prefix or not name:
                    break
                name = name.rpartition(".")[0]
        for name in found:
            out[name].append(g.id)
    return {name: tuple(gids) for name, gids in out.items()}


def _common_prefix(group: Any) -> str:
    """The innermost module name holding every member of ``group`` (``""``: the root)."""
    owners = [m.module_name.split(".") if m.module_name else [] for m in group.members]
    common: list[str] = []
    for parts in zip(*owners):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    return ".".join(common)


_ROUTER_ATTRIBUTES = ("num_experts", "num_local_experts", "num_experts_per_tok", "top_k")


def _routes(model: nn.Module) -> bool:
    """Whether ``model`` routes tokens to experts (split experts, or a module stating its experts)."""
    from torchpare.prune.rules.split_experts import SplitExperts

    return any(
        isinstance(m, SplitExperts) or any(isinstance(getattr(m, a, None), int) for a in _ROUTER_ATTRIBUTES)
        for m in model.modules()
    )
