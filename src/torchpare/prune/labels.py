"""``LabelContext``: the state of label propagation, a union-find over channel *elements* and the
label tensor of each traced tensor.

Element ids: every parameter slice a rule declares gets one element per index (``param``), free
parameters used by plain torch functions get one per flat position, and *sentinels* stand for "never
prunable" (model inputs/outputs, ignored modules, ops the analysis does not understand). A component
containing a sentinel is blocked. ``NEUTRAL`` (-1) marks entries with no channel identity (constants).

Large free parameters (a weight passed through ``erf`` before a matmul) can get *virtual* elements
(``LabelContext(..., virtual_free=...)``): ids from ``VIRTUAL_BASE`` on, with no entry in the
union-find's tables, so a parameter that no union ever touches (it is only blocked, as a range) costs
nothing per entry. The first union that touches one raises :class:`VirtualTouched`; the caller traces
again with that parameter's elements made ordinary (see ``DependencyGraph``), so groups never differ.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from torchpare._utils import get_submodule

__all__ = ["LabelContext", "UnionFind", "SliceInfo", "NEUTRAL", "VIRTUAL_BASE", "VirtualTouched"]

NEUTRAL = -1

# Virtual element ids (see the module docstring) lie in [VIRTUAL_BASE, _VIRTUAL_END): above every
# ordinary element, and below 2**31 so that two ids still pack into one int64 (``_unique_pairs``).
VIRTUAL_BASE = 1 << 30
_VIRTUAL_END = (1 << 31) - 2
# A free parameter gets virtual elements when it has at least this many entries and at least
# 1/_VIRTUAL_SHARE of the model's (a positional embedding, small next to its model and coupled per
# channel, stays ordinary: a touched virtual parameter costs a second trace).
_VIRTUAL_MIN = 1 << 16
_VIRTUAL_SHARE = 32


class VirtualTouched(BaseException):
    """A union reached virtual elements (free parameters that were expected to stay untouched).

    A ``BaseException``, so that a model's own ``except Exception`` cannot swallow it mid-trace;
    :class:`UnionFind` also remembers it in ``touched``. ``starts``: the first ids of those parameters.
    """

    def __init__(self, starts: frozenset[int]) -> None:
        super().__init__(f"union reached the virtual elements of free parameters starting at {sorted(starts)}")
        self.starts = starts

# Element ids and constant labels are views of one ``arange(-1, size - 1)`` per context (see
# ``LabelContext._iota``), grown in powers of two up to this many entries (8 MB); beyond, tensors are made.
_MAX_IOTA = 1 << 20
# Runs at least this long are marked blocked / inexact as one range (see ``LabelContext._mark_run``).
_RANGE_MIN = 1024
# Tensors with at least this many entries are held weakly by the label table (see LabelContext._labels);
# smaller ones strongly (a weak reference and its callback cost more than keeping them to the end)
_WEAK_MIN = 1 << 14


class UnionFind:
    """Union-find over consecutive ints (roots are arbitrary members; only identity matters).

    ``linked`` flags elements that took part in a union: a run of never-linked elements (a fresh
    parameter slice) can be attached to other elements in one slice assignment.

    ``virtual`` lists blocks of virtual elements ``(start, n)`` (:meth:`add_virtual`): each is its own
    root and never linked, with no entry in ``parent`` or ``linked``; any union reaching one raises
    :class:`VirtualTouched` (and records its block start in ``touched``).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.linked = bytearray()
        self.virtual: list[tuple[int, int]] = []
        self.touched: set[int] = set()
        self._next_virtual = VIRTUAL_BASE

    def add_virtual(self, n: int) -> int | None:
        """``n`` virtual elements (see the class docstring); ``None`` when the virtual ids are used up.

        Example:
            >>> uf = UnionFind()
            >>> a, v = uf.add(2), uf.add_virtual(10**6)
            >>> uf.find(v + 5) == v + 5, len(uf.parent)  # its own root, nothing stored
            (True, 2)
            >>> try:
            ...     uf.union(a, v + 5)
            ... except VirtualTouched as touched:
            ...     print(touched.starts == {v}, uf.touched == {v})
            True True
        """
        start = self._next_virtual
        if start + n > _VIRTUAL_END:
            return None
        self._next_virtual = start + n
        self.virtual.append((start, n))
        return start

    def _touch(self, *id_lists: Any) -> None:
        """Raise :class:`VirtualTouched` for the virtual blocks among ``id_lists`` (if any)."""
        end = len(self.parent)
        beyond = np.concatenate([np.asarray(ids, dtype=np.int64).reshape(-1) for ids in id_lists])
        beyond = beyond[beyond >= end]
        starts: set[int] = set()
        if len(beyond):  # the blocks holding them (few blocks, many ids: one pass over the ids per block)
            lo, hi = int(beyond.min()), int(beyond.max())
            for s, n in self.virtual:
                if s <= hi and lo < s + n and bool(((beyond >= s) & (beyond < s + n)).any()):
                    starts.add(s)
        if starts:
            self.touched.update(starts)
            raise VirtualTouched(frozenset(starts))

    def add(self, n: int) -> int:
        start = len(self.parent)
        if start + n > VIRTUAL_BASE:
            raise ValueError(
                f"UnionFind.add(): more than {VIRTUAL_BASE} channel elements; the graph of this model is "
                f"too large to build (ids from {VIRTUAL_BASE} on are reserved for free parameters)."
            )
        self.parent.extend(range(start, start + n))
        self.linked.extend(bytes(n))
        return start

    def add_linked(self, xs: list[int]) -> int:
        """``len(xs)`` new elements, element ``i`` united with ``xs[i]`` (all ``>= 0``); returns the first."""
        start = len(self.parent)
        n = len(xs)
        if n and max(xs) >= start:
            self._touch(xs)
        self.parent.extend(xs)
        linked = self.linked
        linked.extend(b"\x01" * n)
        if n <= 64:
            for x in xs:
                linked[x] = 1
        else:
            flags = np.frombuffer(linked, dtype=np.uint8)  # a transient view: released below
            flags[np.asarray(xs, dtype=np.int64)] = 1
            del flags
        return start

    def find(self, x: int) -> int:
        parent = self.parent
        if x >= VIRTUAL_BASE and x >= len(parent):  # virtual: its own root until touched
            return x
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        self.union_many([a], [b])

    def union_many(self, xs: list[int], ys: list[int]) -> None:
        """``union(x, y)`` for each pair, skipping negative (neutral) ids; inlined for speed."""
        if len(ys) > 8 and self._attach_fresh(xs, ys):
            return
        parent, linked = self.parent, self.linked
        try:
            for x, y in zip(xs, ys):
                if x < 0 or y < 0 or x == y:
                    continue
                rx = x
                while parent[rx] != rx:
                    rx = parent[rx]
                ry = y
                while parent[ry] != ry:
                    ry = parent[ry]
                r = rx if rx < ry else ry
                parent[rx] = parent[ry] = parent[x] = parent[y] = r
                linked[x] = linked[y] = linked[rx] = linked[ry] = 1
        except IndexError:  # only ids past the tables: virtual elements (or a caller's bug, re-raised)
            self._touch(xs, ys)
            raise

    def union_runs(self, a: int, b: int, n: int) -> None:
        """``union(a + i, b + i)`` for ``i < n``: one slice assignment when both runs are still roots
        (two channel runs joined by a residual add), else pair by pair. Same result either way."""
        if a == b or n <= 0:
            return
        parent = self.parent
        lo, hi = (a, b) if a < b else (b, a)
        if lo + n <= hi and parent[lo : lo + n] == list(range(lo, lo + n)) and parent[hi : hi + n] == list(
            range(hi, hi + n)
        ):
            parent[hi : hi + n] = range(lo, lo + n)  # the smaller of two roots stays root, as below
            self.linked[lo : lo + n] = self.linked[hi : hi + n] = b"\x01" * n
            return
        self.union_many(list(range(a, a + n)), list(range(b, b + n)))

    def _attach_fresh(self, xs: list[int], ys: list[int]) -> bool:
        """Fast path: ``ys`` is a run of never-linked elements (its own singletons): point each at its x."""
        n, y0 = len(ys), ys[0]
        if ys[-1] - y0 != n - 1 or ys != list(range(y0, y0 + n)) or self.linked.find(1, y0, y0 + n) != -1:
            return False
        lo, hi = min(xs), max(xs)
        if lo < 0 or (lo < y0 + n and hi >= y0) or max(hi, y0 + n - 1) >= len(self.parent):
            return False  # (virtual elements: the pair loop raises VirtualTouched)
        self.parent[y0 : y0 + n] = xs
        self.linked[y0 : y0 + n] = b"\x01" * n
        flags = np.frombuffer(self.linked, dtype=np.uint8)  # a transient view: released on return
        flags[np.asarray(xs, dtype=np.int64)] = 1
        del flags
        return True


@dataclass
class SliceInfo:
    """A parameter slice whose indices along ``dim`` are elements ``start .. start+size-1``."""

    module_name: str
    param_name: str
    dim: int
    role: str
    unit: str
    start: int
    size: int
    leaf: str | None  # module name of the leaf rule that declared it (None: generic surgery)


class _LabelRef(weakref.ref):
    """A weak reference to a labelled tensor that knows its key in ``LabelContext._labels``."""

    __slots__ = ("key",)


def _forgetter(owner: weakref.ref) -> Callable[[_LabelRef], None]:
    """The weak-reference callback of a context's label table: the tensor of ``ref`` was freed, so its
    entry goes. It holds the context weakly: a strong reference would make a cycle (context, table,
    reference, callback) that keeps a context dropped without ``release()`` (a retried trace, an error)
    alive until the next garbage collection."""

    def forget(ref: _LabelRef) -> None:
        ctx = owner()
        if ctx is not None:
            hit = ctx._labels.get(ref.key)
            if hit is not None and hit[0] is ref:
                del ctx._labels[ref.key]

    return forget


class LabelContext:
    """What rules use during a trace: labels of tensors, parameter elements, unions, blocking.

    Rule-facing methods: :meth:`label` (labels of a tensor), :meth:`param` (elements of a parameter
    slice), :meth:`channels` (1-D labels along a dim), :meth:`along` / :meth:`constant` /
    :meth:`neutral` (build label tensors), :meth:`union`, :meth:`block` / :meth:`keep_whole`
    (never prune, with a reason for the report), :meth:`mark_inexact`, :meth:`defer` (checks after the forward),
    :meth:`sentinel` (an element standing for a reason, e.g. for the outputs of an opaque op).

    Args:
        model: the traced model (parameter lookups, names).
        virtual_free: give large free parameters virtual elements (see the module docstring); the
            trace then raises :class:`VirtualTouched` when a union reaches one.
        ordinary: names of free parameters that get ordinary elements even so (touched in a trace
            before).
    """

    def __init__(self, model: nn.Module, virtual_free: bool = False, ordinary: Iterable[str] = ()) -> None:
        self.model = model
        self.uf = UnionFind()
        self.ordinary = set(ordinary)
        self._virtual_min: int | None = None  # set below when virtual_free
        self.sentinels: dict[int, str] = {}
        self._sentinel_by_reason: dict[str, int] = {}
        self.fixed_reasons: set[int] = set()
        self.inexact: dict[int, str] = {}  # element -> why pruning it differs from zeroing it
        self.slices: dict[tuple[str, str, int, str], SliceInfo] = {}
        self.free: dict[str, tuple[int, tuple[int, ...]]] = {}
        # id(tensor) -> (the tensor or a weak reference to it, its label). Large tensors are held
        # weakly (``_WEAK_MIN``): one the forward dropped is freed at once, as in a plain forward, and
        # its entry goes with it, so its id can never find a stale label; held strongly, every large
        # activation would stay alive to the end of the build (more memory, fresh pages for every new
        # activation, one long free at the end). Small ones are held strongly (cheaper).
        self._labels: dict[int, tuple[Any, torch.Tensor]] = {}
        self._forget = _forgetter(weakref.ref(self))  # (no strong cycle: the context is freed as before)
        self.param_names: dict[int, str] = {}
        self.current_leaf: str | None = None
        self.deferred: list[Callable[[], None]] = []
        # (module, attribute, entry, elements): a size held in a module attribute (see size_attribute);
        # build_groups resolves each element to its (group id, unit) in ``size_units``
        self.size_attrs: list[tuple[str, str, int, list[int]]] = []
        self.size_units: list[tuple[str, str, int, list[tuple[str, int] | None]]] = []
        self._by_tensor: dict[tuple[int, int], int] = {}
        self._ids: dict[tuple[str, str, int, str], torch.Tensor] = {}
        # Label tensors are never written in place, so facts about them stay true: ``_run_at`` maps
        # the storage of every ``arange`` this context made to (tensor, first element, length), so a
        # 1-D view of it is known to be a run without reading its values; ``_along`` maps a label made
        # by :meth:`along` to (label, ids, dim). Rules then skip most tensor work on CNN-style chains.
        self._run_at: dict[int, tuple[torch.Tensor, int, int]] = {}
        self._base: torch.Tensor | None = None  # see _iota
        self._along: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
        self._free_ranges: list[tuple[int, int]] = []
        # label -> (label, 1-D channels, dim) once ``channels`` coupled every position of a channel
        self._coupled: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
        # (first element, count, reason) of long runs marked at once by block / mark_inexact (a whole
        # parameter): one entry instead of one per element; build_groups reads them with ``sentinels``
        self.blocked_ranges: list[tuple[int, int, str]] = []
        self.inexact_ranges: list[tuple[int, int, str]] = []
        # Marks of every virtual element in [start, start + n) one by one (a transposed or permuted
        # view of a large free parameter), kept as spans: (start, n, reason, fixed) and
        # (start, n, reason). Same meaning as one ``sentinels`` / ``inexact`` entry per element (the
        # first mark of an element wins); build_groups expands them for the units it reports only.
        self.element_marks: list[tuple[int, int, str, bool]] = []
        self.element_inexact: list[tuple[int, int, str]] = []
        # every (name, module), shared modules under each of their names; the tracer reuses it
        self.modules: dict[str, nn.Module] = {}
        # One walk for modules and parameters. A module's first visit comes in the order
        # ``named_parameters()`` walks it, so the first name of a shared parameter is the same.
        param_names, modules = self.param_names, self.modules
        # the walk of ``named_modules(remove_duplicate=False)`` (pre-order, children in order) with a
        # stack instead of nested generators, which cost once per level for every module
        stack: list[tuple[str, nn.Module]] = [("", model)]
        total = 0
        while stack:
            name, m = stack.pop()
            if name in modules:
                continue
            modules[name] = m
            for pn, p in m._parameters.items():
                if p is not None and id(p) not in param_names:
                    param_names[id(p)] = f"{name}.{pn}" if name else pn
                    total += p.numel()
            children = [(f"{name}.{cn}" if name else cn, c) for cn, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))
        if virtual_free:
            self._virtual_min = max(_VIRTUAL_MIN, total // _VIRTUAL_SHARE)

    # ----------------------------------------------------------------- elements & sentinels
    def fresh(self, n: int) -> torch.Tensor:
        """``n`` new elements that belong to no parameter."""
        return self._arange(self.uf.add(n), n)

    def _iota(self, end: int) -> torch.Tensor | None:
        """This context's ``arange(-1, size - 1)`` (entry ``e + 1`` is ``e``), grown to hold element
        ``end - 1``; ``None`` past ``_MAX_IOTA``.

        Ids and constant labels are ``as_strided`` views of it: one cheap op each instead of a new
        tensor, and every stride-1 view is a known run. Per context, so a rule that wrote into a label
        (which rules must not do) could not affect another build.
        """
        base = self._base
        if base is not None and end < base.shape[0]:
            return base
        if end >= _MAX_IOTA:
            return None
        size = 1024
        while size <= end:
            size *= 2
        base = self._base = torch.arange(-1, size - 1)
        self._run_at[base.data_ptr()] = (base, -1, size)
        return base

    def _arange(self, start: int, n: int) -> torch.Tensor:
        """``arange(start, start + n)``, remembered as a run (see ``_run_at``)."""
        base = self._iota(start + n)
        if base is not None:
            return base.as_strided((n,), (1,), start + 1)
        ids = torch.arange(start, start + n)
        if n:
            self._run_at[ids.data_ptr()] = (ids, start, n)
        return ids

    def run_start(self, ids: torch.Tensor) -> int | None:
        """First element when 1-D ``ids`` is (a view of) a run this context made, else ``None``.

        Reads no values: the answer comes from the storage and the strides.
        """
        if ids.dim() != 1 or ids.shape[0] == 0 or (ids.shape[0] > 1 and ids.stride(0) != 1):
            return None
        offset = ids.storage_offset()
        hit = self._run_at.get(ids.data_ptr() - 8 * offset)  # the storage's start (int64 labels)
        if hit is None or ids.dtype is not torch.int64:
            return None
        start = hit[1] + offset
        if offset + ids.shape[0] > hit[2] or start < 0:  # [-1, 0, ...] would include the neutral entry
            return None
        return start

    def sentinel(self, reason: str, fixed: bool = False) -> int:
        """The (memoized) element standing for ``reason``: components containing it are blocked."""
        s = self._sentinel_by_reason.get(reason)
        if s is None:
            s = self.uf.add(1)
            self._sentinel_by_reason[reason] = s
            self._mark(s, reason, fixed)
        return s

    def _mark(self, element: int, reason: str, fixed: bool) -> None:
        if element not in self.sentinels:
            if element >= VIRTUAL_BASE and any(s <= element < s + n for s, n, _, _ in self.element_marks):
                return  # marked before, in a span
            self.sentinels[element] = reason
            if fixed:
                self.fixed_reasons.add(element)

    def param(
        self,
        module_name: str,
        param_name: str,
        dim: int,
        role: str,
        unit: str = "channel",
        tie: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Element ids (1-D int64) for the indices of ``module_name.param_name`` along ``dim``.

        Memoized: a module called twice gets the same elements both times (so its uses are coupled).

        Args:
            module_name: dotted name of the module owning the tensor.
            param_name: attribute name of the parameter or buffer in that module.
            dim: dimension carrying channels.
            role: ``"out"`` (computes the channel) or ``"in"`` (reads it).
            unit: unit kind reported by groups made of these elements (``"channel"``, ``"head"``...).
            tie: labels to union with the slice, the same as ``union(tie, param(...))``; a new slice
                of the same length as 1-D ``tie`` is created already united with it (cheaper).
        """
        key = (module_name, param_name, dim, role)
        info = self.slices.get(key)
        if info is None:
            owner = self.modules.get(module_name)
            if owner is None:
                owner = get_submodule(self.model, module_name, who="LabelContext.param")
            # the module's tables first: nn.Module.__getattr__ is a slow fallback
            tensor = owner._parameters.get(param_name)
            unsliceable = None
            if tensor is None:
                tensor = owner._buffers.get(param_name)
                if tensor is None:
                    tensor = getattr(owner, param_name)
                    unsliceable = _unsliceable_reason(owner, module_name, param_name)
            if not isinstance(tensor, torch.Tensor):
                raise AttributeError(
                    f"LabelContext.param(): {module_name or '<root>'}.{param_name} is not a tensor "
                    f"(got {type(tensor).__name__})."
                )
            size = tensor.shape[dim]
            # A tensor shared by several modules (tied embeddings) is one tensor: its slices along
            # the same dim are the same channels, whatever module declared them.
            # (a tensor computed on access has no identity: it is never shared)
            shared = (id(tensor) if unsliceable is None else key, dim % tensor.dim())
            tied = None
            run = None
            if tie is not None and tie.dim() == 1 and tie.shape[0] == size and shared not in self._by_tensor:
                run = self.run_start(tie)
                tied = [run] if run is not None else tie.tolist()
            if not tied:
                tied, start = None, self.uf.add(size)
            elif run is not None or (
                tied[0] >= 0 and tied[-1] - tied[0] == size - 1 and tied == list(range(tied[0], tied[0] + size))
            ):
                # tied to a run of existing elements (e.g. BatchNorm after a conv): share them, which
                # is the same component as new united elements without growing the union-find
                start = tied[0]
                if start + size > len(self.uf.parent):  # a virtual run would become linked
                    self.uf._touch([start])
                self.uf.linked[start : start + size] = b"\x01" * size
            elif min(tied) >= 0:
                start = self.uf.add_linked(tied)
            else:  # neutral entries are not united: plain elements, united below
                tied, start = None, self.uf.add(size)
            info = SliceInfo(module_name, param_name, shared[1], role, unit, start, size, self.current_leaf)
            self.slices[key] = info
            if unsliceable is not None:  # the surgery could not slice it: never prune these channels
                for e in range(start, start + size):
                    self._mark(e, unsliceable, False)
            other = self._by_tensor.setdefault(shared, info.start)
            if other != info.start:
                for i in range(size):
                    self.uf.union(other + i, info.start + i)
            if tied is not None:
                # shared elements are ``tie`` itself, value for value
                return tie if start == tied[0] else self._arange(start, size)
        ids = self._ids.get(key)  # one tensor per slice: label tensors are never written in place
        if ids is None:
            ids = self._ids[key] = self._arange(info.start, info.size)
        if tie is not None:
            self.union(tie, ids)
        return ids

    def release(self) -> None:
        """Drop the per-tensor labels and module table once groups are built (they hold activations)."""
        self._labels.clear()
        self._ids.clear()
        self._run_at.clear()
        self._along.clear()
        self._coupled.clear()
        self._base = None
        self.deferred.clear()
        self.modules.clear()

    # ----------------------------------------------------------------- labels of tensors
    def label(self, t: Any) -> torch.Tensor | None:
        """The label tensor of ``t`` (``None`` if ``t`` is not a tensor).

        Free parameters get one element per flat position on first use (virtual elements for large
        ones when the context was made with ``virtual_free``); tensors the trace never saw are fixed
        (never prunable) unless they hold one value (scalars broadcast without coupling).
        """
        if not isinstance(t, torch.Tensor):
            return None
        hit = self._labels.get(id(t))
        if hit is not None and (hit[0] is t or (type(hit[0]) is _LabelRef and hit[0]() is t)):
            return hit[1]
        name = self.param_names.get(id(t))
        if name is not None:
            n = t.numel()
            start = None
            if self._virtual_min is not None and n >= self._virtual_min and name not in self.ordinary:
                start = self.uf.add_virtual(n)
            if start is None:
                start = self.uf.add(n)
            self.free[name] = (start, tuple(t.shape))
            self._free_ranges.append((start, t.numel()))
            lab = self._arange(start, t.numel()).reshape(t.shape)
        elif t.numel() <= 1:
            lab = self.neutral(t.shape)
        else:
            lab = self.constant(
                self.sentinel("a tensor made outside the traced forward (buffer or global)", fixed=True),
                t.shape,
            )
        self.set_label(t, lab)
        return lab

    def set_label(self, t: torch.Tensor, lab: torch.Tensor | None) -> None:
        """Attach ``lab`` to ``t`` (``None``: neutral). Shapes must match."""
        if lab is None:
            lab = self.neutral(t.shape)
        if tuple(lab.shape) != tuple(t.shape):
            raise ValueError(
                f"LabelContext.set_label(): label shape {tuple(lab.shape)} != tensor shape {tuple(t.shape)}; "
                f"a rule returned labels that do not mirror its output."
            )
        key = id(t)
        if t.numel() < _WEAK_MIN:
            self._labels[key] = (t, lab)
            return
        ref = _LabelRef(t, self._forget)
        ref.key = key
        self._labels[key] = (ref, lab)

    def has_label(self, t: Any) -> bool:
        hit = self._labels.get(id(t))
        return hit is not None and (hit[0] is t or (type(hit[0]) is _LabelRef and hit[0]() is t))

    # ----------------------------------------------------------------- label builders
    def constant(self, element: int, shape: Any) -> torch.Tensor:
        """A label tensor of ``shape`` whose entries are all ``element`` (no memory: an expanded view)."""
        shape = tuple(shape)
        base = self._iota(element + 1) if element >= -1 else None
        if base is None:
            return torch.full((), element, dtype=torch.int64).expand(shape)
        return base.as_strided(shape, (0,) * len(shape), element + 1)

    def neutral(self, shape: Any) -> torch.Tensor:
        """Entries without channel identity."""
        return self.constant(NEUTRAL, shape)

    def along(self, ids: torch.Tensor, shape: Any, dim: int) -> torch.Tensor:
        """Place 1-D ``ids`` along ``dim`` of ``shape``, broadcast over the other dims."""
        shape = tuple(shape)
        dim = dim % len(shape)
        if ids.dim() == 1 and ids.shape[0] == shape[dim]:
            strides = [0] * len(shape)
            strides[dim] = ids.stride(0)
            lab = ids.as_strided(shape, strides)  # one op instead of reshape + expand
        else:
            view = [1] * len(shape)
            view[dim] = ids.numel()
            return ids.reshape(view).expand(shape)
        self._along[id(lab)] = (lab, ids, dim)
        return lab

    def along_ids(self, lab: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """``(ids, dim)`` when ``lab`` was made by :meth:`along` (the same object), else ``None``."""
        hit = self._along.get(id(lab))
        if hit is None or hit[0] is not lab:
            return None
        return hit[1], hit[2]

    # ----------------------------------------------------------------- unions
    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Union ``a`` and ``b`` entry by entry after broadcasting (neutral entries skipped)."""
        pair = self._coupled_pair(a, b)
        if pair is not None:  # a residual stream already coupled per channel + a layer's channels
            a, b = pair
        if a.dim() == 1 and a.shape == b.shape:  # the common case: 1-D channels
            ra, rb = self.run_start(a), self.run_start(b)
            if ra is not None and rb is not None:
                self.uf.union_runs(ra, rb, a.shape[0])
                return
            if a.shape[0] <= 4096:
                self.uf.union_many(a.tolist(), b.tolist())
                return
        if self.uf.virtual:  # reaching virtual elements raises: before sorting every pair, not after
            a, b = _squeeze_broadcast(a, b)
            if a.numel() and max(int(a.max()), int(b.max())) >= len(self.uf.parent):
                self.uf._touch(a.reshape(-1).numpy(), b.reshape(-1).numpy())
        xs, ys = _unique_pairs(a, b)
        self.uf.union_many(xs, ys)

    def union_all(self, lab: torch.Tensor, element: int) -> None:
        """Union every (non-neutral) entry of ``lab`` with ``element``."""
        for x in self._elements(lab):
            if x != NEUTRAL:
                self.uf.union(x, element)

    def _elements(self, lab: torch.Tensor) -> list[int]:
        """Distinct entries of ``lab`` (neutral included), read off its ids when :meth:`along` made it."""
        hit = self.along_ids(lab)
        if hit is not None and lab.numel():
            start = self.run_start(hit[0])
            if start is not None:
                return list(range(start, start + hit[0].shape[0]))
            return sorted(set(hit[0].tolist()))
        return _unique(lab)

    def block(self, lab: torch.Tensor | None, reason: str) -> None:
        """Mark every element in ``lab`` blocked by ``reason`` (shown by ``graph.report()``).

        Marking keeps the elements' own components (so a blocked group still reports its units).
        """
        if lab is not None and not self._mark_run(lab, reason, self.blocked_ranges):
            span = self._virtual_span(lab)
            if span is not None:
                self.element_marks.append((*span, reason, False))
                return
            for x in self._elements(lab):
                if x != NEUTRAL:
                    self._mark(x, reason, False)

    def keep_whole(self, lab: torch.Tensor | None, reason: str) -> None:
        """Never prune the elements in ``lab``, for structural reasons (model input/output, ignored
        module): like :meth:`block`, but the reason is not a limit of the analysis."""
        if lab is not None:
            span = self._virtual_span(lab)
            if span is not None:
                self.element_marks.append((*span, reason, True))
                return
            for x in self._elements(lab):
                if x != NEUTRAL:
                    self._mark(x, reason, True)

    def fix(self, lab: torch.Tensor | None, reason: str) -> None:
        """Deprecated alias of :meth:`keep_whole` ("fix" read as "repair"); emits ``FutureWarning``."""
        warnings.warn(
            "LabelContext.fix() is renamed LabelContext.keep_whole(); fix() will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        self.keep_whole(lab, reason)

    def _mark_run(self, lab: torch.Tensor, reason: str, ranges: list[tuple[int, int, str]]) -> bool:
        """Record a long run of elements (the labels of a whole parameter) as one range; False if
        ``lab`` is not one."""
        n = lab.numel()
        if n < _RANGE_MIN or not lab.is_contiguous():
            return False
        start = self.run_start(lab.reshape(-1))
        if start is None:
            return False
        ranges.append((start, n, reason))
        return True

    def _virtual_span(self, lab: torch.Tensor) -> tuple[int, int] | None:
        """``(first, count)`` when ``lab`` holds exactly the virtual elements ``first .. first+count-1``
        (in any order, repeats allowed: a transposed, permuted or expanded view of a run this context
        made), else ``None``. Reads no values: the answer comes from the storage and the strides."""
        if not self.uf.virtual or lab.dtype is not torch.int64 or lab.numel() == 0:
            return None
        offset = lab.storage_offset()
        hit = self._run_at.get(lab.data_ptr() - 8 * offset)
        if hit is None:
            return None
        count = 1
        for stride, size in sorted((st, sz) for st, sz in zip(lab.stride(), lab.shape) if sz > 1 and st):
            if stride != count:
                return None
            count *= size
        start = hit[1] + offset
        if offset + count > hit[2] or start < len(self.uf.parent):  # ordinary elements: one by one
            return None
        return start, count

    def is_blocked(self, element: int) -> bool:
        """True when ``element`` was marked by :meth:`block` or :meth:`keep_whole` (alone or in a range)."""
        return (
            element in self.sentinels
            or any(s <= element < s + n for s, n, _ in self.blocked_ranges)
            or any(s <= element < s + n for s, n, _, _ in self.element_marks)
        )

    def defer(self, check: Callable[[], None]) -> None:
        """Run ``check()`` after the whole forward, when every coupling is known (e.g. lossy selections)."""
        self.deferred.append(check)

    def roots(self, lab: torch.Tensor) -> set[int]:
        """Components present in ``lab``, neutral entries and untouched free-parameter positions aside.

        A free parameter sliced along a non-channel dim (``self.pos[:, :seq_len]``) leaves positions
        that no op ever used; they follow their channel and must not count as channels dropped.
        """
        find, linked, end = self.uf.find, self.uf.linked, len(self.uf.parent)
        # (virtual elements are never linked: they are free-parameter positions, left out)
        return {
            find(x)
            for x in self._elements(lab)
            if x != NEUTRAL and ((x < end and linked[x]) or not self.in_free(x))
        }

    def in_free(self, element: int) -> bool:
        """True when ``element`` is a flat position of a free parameter."""
        return any(start <= element < start + n for start, n in self._free_ranges)

    def size_attribute(self, module_name: str, attr: str, ids: torch.Tensor, index: int = -1) -> None:
        """Attribute ``attr`` of ``module_name`` holds the length of the dim whose channel labels are
        1-D ``ids`` (entry ``index`` of it when the attribute is a shape): the surgery sets it to the
        number of channels kept (e.g. ``normalized_shape`` of a norm without parameters).

        Declared once per ``(module, attr, index)``; a second declaration is ignored.
        """
        if any(m == module_name and a == attr and i == index for m, a, i, _ in self.size_attrs):
            return
        self.size_attrs.append((module_name, attr, index, ids.reshape(-1).tolist()))

    def mark_inexact(self, lab: torch.Tensor | None, reason: str) -> None:
        """Pruning these elements is not the same as zeroing them at consumers; ``reason`` says why
        (e.g. ``"norm statistics at 'ln'"``) and is shown as the group's ``inexact_reason``."""
        if lab is not None and not self._mark_run(lab, reason, self.inexact_ranges):
            span = self._virtual_span(lab)
            if span is not None:
                self.element_inexact.append((*span, reason))
                return
            spans = self.element_inexact
            if not spans:  # setdefault for each element, at C speed (same keys, values and order)
                fresh = dict.fromkeys(self._elements(lab), reason)
                fresh.pop(NEUTRAL, None)
                for x in fresh.keys() & self.inexact.keys():
                    del fresh[x]
                self.inexact.update(fresh)
                return
            for x in self._elements(lab):
                if x != NEUTRAL and not (x >= VIRTUAL_BASE and any(s <= x < s + n for s, n, _ in spans)):
                    self.inexact.setdefault(x, reason)

    def channels(self, lab: torch.Tensor, dim: int, where: str = "") -> torch.Tensor:
        """1-D labels along ``dim``, after coupling every position that shares a channel index.

        A layer reading channels on ``dim`` uses column ``c`` for every position, so all entries at
        index ``c`` (e.g. the class token and the patch tokens of a ViT) are unioned. If another dim
        carried independent channels they all end up coupled into one unit: unprunable, never wrong.
        """
        dim = dim % lab.dim()
        hit = self.along_ids(lab)
        if hit is not None and hit[1] == dim:
            return hit[0]
        shape, strides = lab.shape, lab.stride()
        if lab.numel() and all(strides[d] == 0 or shape[d] == 1 for d in range(lab.dim()) if d != dim):
            # constant along every other dim (an expanded view): read the channels off the strides
            return lab.as_strided((shape[dim],), (strides[dim],))
        first = lab
        for d in range(lab.dim()):
            if d != dim and lab.shape[d] > 0:
                first = first.narrow(d, 0, 1)
        hit2 = self._coupled.get(id(lab))
        if hit2 is not None and hit2[0] is lab and hit2[2] == dim:
            return hit2[1]
        if not _constant_except(lab, dim, first):
            self.union(lab, first)
        ids = first.reshape(-1)
        if bool((ids != NEUTRAL).all()):  # every entry of channel c is now in the component of ids[c]
            self._coupled[id(lab)] = (lab, ids, dim)
        return ids

    def _coupled_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """1-D ``(channels, ids)`` whose union equals ``union(a, b)``, when one side was coupled per
        channel by :meth:`channels` and the other is an :meth:`along` label on the same dim and shape."""
        for x, y in ((a, b), (b, a)):
            hit = self._coupled.get(id(x))
            if hit is None or hit[0] is not x or x.shape != y.shape:
                continue
            along = self.along_ids(y)
            if along is not None and along[1] == hit[2]:
                return hit[1], along[0]
        return None


def _unsliceable_reason(owner: nn.Module, module_name: str, param_name: str) -> str:
    """Why ``owner.param_name``, a tensor that is neither a parameter nor a buffer, cannot be pruned."""
    where = f"{module_name}.{param_name}".lstrip(".")
    parametrizations = getattr(owner, "parametrizations", None)
    if parametrizations is not None and param_name in parametrizations:
        kinds = ", ".join(type(p).__name__ for p in parametrizations[param_name])
        return (
            f"{where} is parametrized ({kinds}): remove the parametrization "
            f"(torch.nn.utils.parametrize.remove_parametrizations) before pruning"
        )
    return f"{where} is computed on access, not a parameter or buffer: it cannot be sliced"


def _squeeze_broadcast(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast ``a`` and ``b``, then drop dims along which both are constant (stride 0)."""
    a, b = torch.broadcast_tensors(a, b)
    for d in range(a.dim()):
        if a.shape[d] > 1 and (a.stride(d) == 0 and b.stride(d) == 0):
            a, b = a.narrow(d, 0, 1), b.narrow(d, 0, 1)
    return a, b


def _unique_pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[list[int], list[int]]:
    """Distinct ``(a, b)`` entry pairs after broadcasting (small inputs are returned as they are)."""
    a, b = _squeeze_broadcast(a, b)
    a, b = a.reshape(-1), b.reshape(-1)
    if a.numel() > 4096:  # one 1-D unique over packed pairs is much cheaper than unique(dim=0)
        packed = torch.unique(((a + 1) << 32) | (b + 1))
        a, b = (packed >> 32) - 1, (packed & 0xFFFFFFFF) - 1
    return a.tolist(), b.tolist()


def _unique(lab: torch.Tensor) -> list[int]:
    for d in range(lab.dim()):
        if lab.shape[d] > 1 and lab.stride(d) == 0:
            lab = lab.narrow(d, 0, 1)
    if lab.numel() == 0:
        return []
    if lab.numel() <= 4096:  # torch.unique has a large fixed cost on small tensors
        return sorted(set(lab.reshape(-1).tolist()))
    return torch.unique(lab).tolist()


def _constant_except(lab: torch.Tensor, dim: int, first: torch.Tensor) -> bool:
    """True when ``lab`` equals ``first`` (its slice at 0 on every other dim), neutral entries aside."""
    if all(lab.stride(d) == 0 or lab.shape[d] <= 1 for d in range(lab.dim()) if d != dim):
        return True
    same = (lab == first) | (lab == NEUTRAL)
    return bool(same.all())


def varies_along(lab: torch.Tensor, d: int) -> bool:
    """True when ``lab`` holds different (non-neutral) labels along dim ``d``."""
    d = d % lab.dim() if lab.dim() else 0
    if lab.dim() == 0 or lab.shape[d] <= 1 or lab.stride(d) == 0:
        return False
    # One line along ``d`` first (a channel dim usually varies there already): cheap and exact.
    line = lab
    for o in range(lab.dim()):
        if o != d and lab.shape[o] > 1:
            line = line.narrow(o, 0, 1)
    line = line.reshape(-1)
    if line.numel() and bool(((line != line[0]) & (line != NEUTRAL)).any()) and int(line[0]) != NEUTRAL:
        return True
    # The whole tensor: one comparison, and the neutral masks only where something differs.
    first = lab.narrow(d, 0, 1)
    diff = lab != first
    if not bool(diff.any()):
        return False
    return bool((diff & (lab != NEUTRAL) & (first != NEUTRAL)).any())


def varying_dims(lab: torch.Tensor) -> list[int]:
    """The dims along which ``lab`` varies."""
    return [d for d in range(lab.dim()) if varies_along(lab, d)]


def distinct(lab: torch.Tensor) -> list[int]:
    """Sorted distinct non-neutral element ids in ``lab``."""
    return [x for x in _unique(lab) if x != NEUTRAL]
