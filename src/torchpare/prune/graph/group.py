"""Channel groups: the coupled parameter slices that must be pruned together, built from the union-find.

Each union-find component is one *unit* (a channel, a head...). Components touching the same set of
parameter slices form one :class:`ChannelGroup`, whose units are ordered by their index in the first
member. A component holding a marked element is blocked (model input/output, ignored module, unknown op).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from torchpare.prune.labels import LabelContext

__all__ = ["GroupMember", "ChannelGroup", "build_groups"]

_IDENTITY_MAPS: dict[int, tuple[tuple[int, ...], ...]] = {}


@dataclass(frozen=True)
class GroupMember:
    """One parameter (or buffer) slice of a group.

    Attributes:
        module_name: dotted module name owning the tensor (``""`` = root module).
        param_name: attribute name in that module (``"weight"``, ``"running_mean"``, ``"cls_token"``).
        dim: tensor dim carrying the group's channels.
        index_map: ``index_map[i]`` = indices along ``dim`` belonging to unit ``i``.
        role: ``"out"`` (computes the channel) or ``"in"`` (reads it).
    """

    module_name: str
    param_name: str
    dim: int
    index_map: tuple[tuple[int, ...], ...]
    role: str

    @property
    def path(self) -> str:
        """``module_name.param_name`` (as in ``model.state_dict()``)."""
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels: removing unit ``i`` removes ``index_map[i]`` from every member.

    Attributes:
        id: stable readable id: the first producing module (``"layer1.0.conv1"``), with ``#heads`` /
            ``#kv_heads`` for head units, ``#in`` when nothing prunable produces the channels (the
            model input), and ``#2``, ``#3``... when one module's channels split into several groups.
        size: number of units.
        unit: ``"channel"``, ``"head"``, ``"kv_head"``...
        members: the slices, in trace order.
        exact: pruning equals zeroing the removed units at their consumers (False through norm stats).
        blocked_by: why the group cannot be pruned, or ``None``.
        inexact_reason: for ``exact=False``, the op that makes pruning differ from zeroing.
    """

    id: str
    size: int
    unit: str
    members: tuple[GroupMember, ...]
    exact: bool
    blocked_by: str | None
    inexact_reason: str | None = None

    def module_names(self) -> list[str]:
        """Names of the modules owning a member, in order, without repeats."""
        return list(dict.fromkeys(m.module_name for m in self.members))

    def __repr__(self) -> str:
        state = f", blocked_by={self.blocked_by!r}" if self.blocked_by else ""
        return (
            f"ChannelGroup(id={self.id!r}, size={self.size}, unit={self.unit!r}, "
            f"members={len(self.members)}, exact={self.exact}{state})"
        )


def _roots(parent: list[int]) -> np.ndarray:
    """Root of every element (pointer jumping over the union-find's parent array)."""
    roots = np.asarray(parent, dtype=np.int64)
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


def _resolve_free(
    ctx: LabelContext, roots: np.ndarray, names: list[str] | None = None
) -> list[tuple[tuple[str, str, int, str], np.ndarray]]:
    """Map free parameters (one element per flat position) back to ``(dim, index)`` slices.

    Returns ``(key, root_of_index)`` pairs: the dim whose every index lies in a single component.
    A parameter whose components cut across dims is marked blocked. ``names``: only these.
    """
    out = []
    linked = np.frombuffer(bytes(ctx.uf.linked), dtype=np.uint8).astype(bool)
    end = len(ctx.uf.parent)
    for name, (start, shape) in ctx.free.items():
        if names is not None and name not in names:
            continue
        owner, _, pname = name.rpartition(".")
        if start >= end:  # virtual elements (never linked): what the loop below finds, without the arrays
            d, root_of_index = _untouched_dim(start, shape)
            out.append(((owner, pname, d, "out"), root_of_index))
            continue
        n = int(np.prod(shape, dtype=np.int64))
        flat = roots[start : start + n].reshape(shape)
        # positions no op ever touched (e.g. sliced off ``pos[:, :seq_len]``) follow their index
        used = (
            linked[start : start + n] | (roots[start : start + n] != np.arange(start, start + n))
        ).reshape(shape)
        chosen = None
        for d in range(len(shape)):
            if shape[d] <= 1:
                continue
            moved = np.moveaxis(flat, d, 0).reshape(shape[d], -1)
            mask = np.moveaxis(used, d, 0).reshape(shape[d], -1)
            pick = np.where(mask.any(axis=1), mask.argmax(axis=1), 0)
            ref = moved[np.arange(shape[d]), pick][:, None]
            if ((moved == ref) | ~mask).all():
                chosen = (d, ref[:, 0])
                break
        if chosen is None:
            distinct_roots = set(flat.reshape(-1).tolist())
            if len(distinct_roots) > 1:
                reason = f"free parameter {name!r} couples channels on several dims"
                for r in distinct_roots:
                    ctx._mark(int(r), reason, False)
            continue
        out.append(((owner, pname, chosen[0], "out"), chosen[1]))
    return out


def _untouched_dim(start: int, shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
    """What :func:`_resolve_free` finds for a free parameter whose elements (from ``start``) no union
    touched: every entry its own unit and unused, so the first dim longer than 1 is the channel dim,
    and unit ``i`` is the entry at index ``i`` there and 0 elsewhere."""
    d = next(d for d in range(len(shape)) if shape[d] > 1)
    stride = int(np.prod(shape[d + 1 :], dtype=np.int64))
    return d, start + stride * np.arange(shape[d], dtype=np.int64)


def _virtual_safe(
    ctx: LabelContext, root_of: Callable[[int], int], roots_in: Callable[[int, int], list[int]], units: list[int]
) -> tuple[Callable[[int], int], Callable[[int, int], list[int]]]:
    """``root_of`` and ``roots_in`` extended to virtual elements (never touched: each its own root).

    ``roots_in`` over virtual elements returns only those among ``units`` (the virtual roots groups are
    made of): the others are looked up by no group, so a blocked range over a large free parameter
    costs the units it holds instead of one entry per element.
    """
    end = len(ctx.uf.parent)
    if not ctx.uf.virtual:
        return root_of, roots_in
    virtual_units = sorted(units)

    def root_of_any(e: int) -> int:
        return e if e >= end else root_of(e)

    def roots_in_any(start: int, n: int) -> list[int]:
        if start < end:
            return roots_in(start, n)
        return virtual_units[bisect_left(virtual_units, start) : bisect_left(virtual_units, start + n)]

    return root_of_any, roots_in_any


def _free_rows(ctx: LabelContext, roots: list[int]) -> list[tuple[tuple[str, str, int, str], tuple[int, ...]]]:
    """:func:`_resolve_free` with plain lists: a 1-D free parameter (a layer scale, an RMSNorm weight
    applied by hand) is its own channel dim, read without numpy; others go through numpy."""
    multi = [name for name, (_, shape) in ctx.free.items() if len(shape) != 1]
    resolved = (
        {key[:2]: (key, r) for key, r in _resolve_free(ctx, np.asarray(roots, dtype=np.int64), multi)}
        if multi
        else {}
    )
    rows = []
    for name, (start, shape) in ctx.free.items():
        owner, _, pname = name.rpartition(".")
        key = (owner, pname, 0, "out")
        if len(shape) == 1:
            if shape[0] > 1:  # one entry is no channel dim (as in _resolve_free)
                if start >= len(roots):  # virtual elements: each its own root
                    rows.append((key, tuple(range(start, start + shape[0]))))
                else:
                    rows.append((key, tuple(roots[start : start + shape[0]])))
            continue
        if (owner, pname) in resolved:
            k, root_of_index = resolved[(owner, pname)]
            rows.append((k, tuple(root_of_index.tolist())))
    return rows


def _identity_map(n: int) -> tuple[tuple[int, ...], ...]:
    """``((0,), (1,), ..., (n-1,))``: the index map of most members, shared (tuples are immutable)."""
    m = _IDENTITY_MAPS.get(n)
    if m is None:
        m = tuple(zip(range(n)))
        if len(_IDENTITY_MAPS) < 512:
            _IDENTITY_MAPS[n] = m
    return m


def _run_starts(a: np.ndarray, b: np.ndarray | None = None, end: bool = False) -> np.ndarray:
    """Indices where a run of equal ``a`` (and ``b``) values starts; with ``end``, ``len(a)`` appended."""
    if not len(a):
        return np.zeros(int(end), dtype=np.int64)
    change = np.empty(len(a) + end, dtype=bool)
    change[0] = True
    np.not_equal(a[1:], a[:-1], out=change[1 : len(a)])
    if b is not None:
        change[1 : len(a)] |= b[1:] != b[:-1]
    if end:
        change[-1] = True
    return np.flatnonzero(change)


def _by_signature(pair_key: np.ndarray, root_first: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Roots (as their first pair) grouped by signature, the sorted keys they touch, with its length.

    Signatures come in the order of their first root (as a dict keyed by signature would give);
    the roots of one signature in increasing order. Exact: every key of a signature is compared.
    """
    n_pairs = np.diff(root_first, append=len(pair_key))
    if len(root_first) <= 1024:  # few units: a dict keyed by the keys' bytes beats the passes below
        by_sig: dict[bytes, list[int]] = {}
        raw, width = pair_key.astype(np.int64).tobytes(), 8
        for a, c in zip(root_first.tolist(), n_pairs.tolist()):
            by_sig.setdefault(raw[width * a : width * (a + c)], []).append(a)
        return [(np.asarray(firsts), len(sig) // width) for sig, firsts in by_sig.items()]
    sig_of_root = np.empty(len(root_first), dtype=np.int64)
    n_sigs = 0
    n_keys = int(pair_key.max()) + 1 if len(pair_key) else 1
    for c in np.unique(n_pairs).tolist():
        sel = np.flatnonzero(n_pairs == c)
        rows = pair_key[root_first[sel][:, None] + np.arange(c)]
        # one int per row: digits in base n_keys, re-ranked before the code could overflow
        code, bound = rows[:, 0].copy(), n_keys
        for col in range(1, c):
            if bound * n_keys >= 1 << 62:
                code = np.unique(code, return_inverse=True)[1].reshape(-1)
                bound = int(code.max()) + 1
            code = code * n_keys + rows[:, col]
            bound *= n_keys
        _, inverse = np.unique(code, return_inverse=True)
        inverse = inverse.reshape(-1)
        sig_of_root[sel] = inverse + n_sigs
        n_sigs += int(inverse.max()) + 1
    # roots of each signature in increasing order (sort by signature, then position)
    order = np.argsort(sig_of_root * len(sig_of_root) + np.arange(len(sig_of_root)))
    bounds = _run_starts(sig_of_root[order], end=True)
    firsts = [root_first[order[a:b]] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    parts = [(f, int(n_pairs[order[a]])) for f, a in zip(firsts, bounds[:-1].tolist())]
    parts.sort(key=lambda p: int(p[0][0]))  # by first root: the order a dict keyed by signature gives
    return parts


def _ranges(
    ctx: LabelContext,
) -> tuple[list[tuple[str, str, int, str]], list[tuple[int, int]], list[list[int]]]:
    """Slice keys, the distinct element ranges ``(start, size)`` of the slices, and the keys of each range.

    Rules tie most slices to an existing run of elements (a BatchNorm after its conv, the next conv's
    inputs): slices over the same range are the same units, so groups are built over ranges (5-6x
    fewer entries in CNNs) and each range is expanded to its slices at the end. Ranges are numbered
    in the order of their first slice, so a range's first slice is its lowest key index.
    """
    keys = list(ctx.slices)
    ranges: list[tuple[int, int]] = []
    keys_of: list[list[int]] = []
    index: dict[tuple[int, int], int] = {}
    for ki, info in enumerate(ctx.slices.values()):
        r = (info.start, info.size)
        ri = index.get(r)
        if ri is None:
            index[r] = len(ranges)
            ranges.append(r)
            keys_of.append([ki])
        else:
            keys_of[ri].append(ki)
    return keys, ranges, keys_of


def _members(
    keys: list[tuple[str, str, int, str]],
    keys_of: list[list[int]],
    maps: dict[int, tuple[tuple[int, ...], ...]],
) -> tuple[GroupMember, ...]:
    """The members of a group whose ranges have the index maps ``maps``, in key (trace) order."""
    found = sorted((ki, ri) for ri in maps for ki in keys_of[ri])
    return tuple(GroupMember(*keys[ki][:3], maps[ri], keys[ki][3]) for ki, ri in found)


def _group_state(
    keys: list[tuple[str, str, int, str]],
    unit_kind: list[str],
    member_keys: list[int],
    group_roots: list[int],
    blocked: dict[int, str],
    inexact: dict[int, str],
) -> tuple[str, str | None, str | None]:
    """``(unit, blocked_by, inexact_reason)`` of a group of slices ``member_keys`` and units ``group_roots``."""
    # (isdisjoint first: at C speed, and most groups have no blocked or inexact unit)
    reason = None
    if blocked and not blocked.keys().isdisjoint(group_roots):
        reason = next(blocked[root] for root in group_roots if root in blocked)
    if reason is None and not any(keys[ki][3] == "out" for ki in member_keys):
        reason = "no layer produces these channels (they come from a constant or padding)"
    kinds = [unit_kind[ki] for ki in member_keys if unit_kind[ki] != "channel"]
    inexact_reason = None
    if inexact and not inexact.keys().isdisjoint(group_roots):
        inexact_reason = next(inexact[root] for root in group_roots if root in inexact)
    return (kinds[0] if kinds else "channel"), reason, inexact_reason


def _reasons(
    ctx: LabelContext,
    root_of: Callable[[int], int],
    roots_in: Callable[[int, int], list[int]],
    virtual_units: Sequence[int] = (),
) -> tuple[dict[int, str], dict[int, str]]:
    """Root -> why blocked, and root -> why inexact (the first reason of each component wins).

    ``roots_in(start, n)``: the roots of elements ``start .. start + n - 1`` (ranges marked at once).
    ``virtual_units``: the roots of units that are virtual elements (each its own root): the spans of
    ``ctx.element_marks`` / ``ctx.element_inexact`` are expanded for them only, as the per-element
    marks they stand for (an element marked one by one before is in ``sentinels`` / ``inexact``).
    """
    # setdefault(root, why) over the elements in order, at C speed: built from the last element to
    # the first, the first reason of each root is the one left (only looked up, never iterated)
    inexact: dict[int, str] = dict(zip(map(root_of, reversed(ctx.inexact)), reversed(ctx.inexact.values())))
    if ctx.element_inexact:
        for u in virtual_units:
            if u not in ctx.inexact:
                why = next((w for s, n, w in ctx.element_inexact if s <= u < s + n), None)
                if why is not None:
                    inexact.setdefault(u, why)
    for start, n, why in ctx.inexact_ranges:  # dict.fromkeys + update: setdefault at C speed
        inexact = {**dict.fromkeys(roots_in(start, n), why), **inexact}
    marks = [(e in ctx.fixed_reasons, e, 1, ctx.sentinels[e]) for e in ctx.sentinels]
    if ctx.element_marks:  # where the sentinel of each element would be: after them, before ranges
        for u in virtual_units:
            if u not in ctx.sentinels:
                hit = next(((f, w) for s, n, w, f in ctx.element_marks if s <= u < s + n), None)
                if hit is not None:
                    marks.append((hit[0], u, 1, hit[1]))
    marks += [(False, start, n, why) for start, n, why in ctx.blocked_ranges]
    blocked: dict[int, str] = {}
    for _, start, n, why in sorted(marks, key=lambda m: (m[0], m[1])):  # op reasons first
        if n == 1:
            blocked.setdefault(root_of(start), why)
        else:
            blocked = {**dict.fromkeys(roots_in(start, n), why), **blocked}
    return blocked, inexact


def build_groups(ctx: LabelContext) -> list[ChannelGroup]:
    """Turn the finished union-find of ``ctx`` into channel groups (blocked ones included)."""
    keys, ranges, keys_of = _ranges(ctx)
    if sum(size for _, size in ranges) <= _SMALL:
        return _build_groups_small(ctx, keys, ranges, keys_of)
    roots = _roots(ctx.uf.parent)
    unit_kind = [info.unit for info in ctx.slices.values()]
    starts = np.fromiter((start for start, _ in ranges), dtype=np.int64, count=len(ranges))
    sizes = np.fromiter((size for _, size in ranges), dtype=np.int64, count=len(ranges))
    # one entry per (range, index): its range, its local index and the root of its element
    e_key = [np.repeat(np.arange(len(ranges), dtype=np.int64), sizes)]
    e_local = [np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)]
    e_root = [roots[e_local[0] + np.repeat(starts, sizes)]]
    known = set(keys)
    virtual_units: list[int] = []
    for key, root_of_index in _resolve_free(ctx, roots):
        if key in known:
            continue
        if len(root_of_index) and root_of_index[0] >= len(roots):  # untouched virtual elements
            virtual_units.extend(root_of_index.tolist())
        unit_kind.append("channel")
        keys_of.append([len(keys)])
        e_root.append(root_of_index)
        e_key.append(np.full(len(root_of_index), len(keys_of) - 1, dtype=np.int64))
        e_local.append(np.arange(len(root_of_index), dtype=np.int64))
        keys.append(key)
    if not keys:
        return []
    r, k, loc = np.concatenate(e_root), np.concatenate(e_key), np.concatenate(e_local)
    # entries are already ordered by (range, local index): a stable sort by root orders by all three
    # (an unstable sort of root * n + position is that stable sort, and several times faster)
    order = np.argsort(r * len(r) + np.arange(len(r)))
    r, k, loc = r[order], k[order], loc[order]
    # boundaries of (root, range) runs and of root runs in the sorted entries
    pair_start = _run_starts(r, k)
    pair_end = np.append(pair_start[1:], len(r))
    pair_root = r[pair_start]
    pair_key_arr = k[pair_start]
    pair_key = pair_key_arr.tolist()
    single = pair_end - pair_start == 1
    first_loc = loc[pair_start]
    # each root's pairs are contiguous: root_first[i] is the first pair of the i-th root
    root_first = _run_starts(pair_root)
    roots_of_pairs = pair_root.tolist()
    root_of, roots_in = _virtual_safe(
        ctx,
        lambda e: int(roots[e]),
        lambda s, n: np.unique(roots[s : s + n]).tolist(),
        virtual_units,
    )
    blocked, inexact = _reasons(ctx, root_of, roots_in, virtual_units)

    found: list[tuple[int, int, ChannelGroup, list[int]]] = []
    loc_list: list[int] | None = None
    for first_pairs, n_ranges in _by_signature(pair_key_arr, root_first):
        sig = pair_key[first_pairs[0] : first_pairs[0] + n_ranges]  # sorted ranges of the unit's slices
        first_pairs = first_pairs[np.argsort(first_loc[first_pairs], kind="stable")]  # unit order
        n = len(first_pairs)
        pidx = first_pairs[None, :] + np.arange(len(sig))[:, None]  # (range, unit) -> pair
        locs = first_loc[pidx]
        all_single = single[pidx].all(axis=1).tolist()
        identity = (locs == np.arange(n)).all(axis=1).tolist()
        maps = {}
        for j, ri in enumerate(sig):
            if identity[j] and all_single[j]:
                maps[ri] = _identity_map(n)  # most members: unit i is index i
            elif all_single[j]:
                maps[ri] = tuple(zip(locs[j].tolist()))
            else:
                if loc_list is None:
                    loc_list = loc.tolist()
                maps[ri] = tuple(
                    tuple(loc_list[lo:hi])
                    for lo, hi in zip(pair_start[pidx[j]].tolist(), pair_end[pidx[j]].tolist())
                )
        group_roots = [roots_of_pairs[i] for i in first_pairs.tolist()]
        _add_group(found, keys, keys_of, unit_kind, maps, group_roots, blocked, inexact)
    return _named(found, ctx, root_of)


def _named(
    found: list[tuple[int, int, ChannelGroup, list[int]]], ctx: LabelContext, root_of: Callable[[int], int]
) -> list[ChannelGroup]:
    """Sort groups by their first slice (then smallest root) and give them their readable ids.

    ``found`` holds what :func:`_add_group` collects; the roots of the units resolve the size
    attributes the rules declared (``ctx.size_attrs``) to group units, kept in ``ctx.size_units``.
    """
    found.sort(key=lambda g: (g[0], g[1]))
    used: dict[str, int] = {}
    named = []
    unit_of: dict[int, tuple[str, int]] = {}
    for _, _, g, units in found:
        first = next((m for m in g.members if m.role == "out"), None)
        if first is None:  # only readers: the model input, a constant or padding feeds them
            base = f"{g.members[0].module_name or g.members[0].param_name}#in"
        else:
            base = first.module_name or first.param_name
        if g.unit != "channel":
            base = f"{base}#{g.unit}s"
        n = used.get(base, 0) + 1
        used[base] = n
        gid = base if n == 1 else f"{base}#{n}"
        named.append(ChannelGroup(gid, g.size, g.unit, g.members, g.exact, g.blocked_by, g.inexact_reason))
        if ctx.size_attrs:
            unit_of.update(zip(units, zip(repeat(gid), range(len(units)))))  # (root, (gid, i)), at C speed
    ctx.size_units = [
        (module, attr, index, [unit_of.get(root_of(e)) for e in elements])
        for module, attr, index, elements in ctx.size_attrs
    ]
    return named


# Up to this many (range, index) entries the plain-Python path is used: it beat the numpy passes on
# every model measured (29-48k entries: 1.3-2.6x faster; BERT hidden 512 x 6 layers, 48k entries:
# 5.0 vs 7.2 ms; `benchmarks/graph_build_costs.py`). Beyond it, numpy's per-entry cost is expected to
# be lower. Both give identical groups.
_SMALL = 200_000


def _build_groups_small(
    ctx: LabelContext,
    keys: list[tuple[str, str, int, str]],
    ranges: list[tuple[int, int]],
    keys_of: list[list[int]],
) -> list[ChannelGroup]:
    """:func:`build_groups` in plain Python (numpy only to resolve free parameters)."""
    roots = ctx.uf.parent
    while True:  # pointer jumping, each pass at C speed; trees are shallow
        nxt = list(map(roots.__getitem__, roots))
        if nxt == roots:
            break
        roots = nxt
    unit_kind = [info.unit for info in ctx.slices.values()]
    root_rows = [tuple(roots[start : start + size]) for start, size in ranges]
    virtual_units: list[int] = []  # roots of untouched virtual elements (whole rows of them)
    if ctx.free:
        known = set(keys)
        for key, row in _free_rows(ctx, roots):
            if key not in known:  # a free parameter is one more range, of its own
                keys_of.append([len(keys)])
                keys.append(key)
                unit_kind.append("channel")
                root_rows.append(row)
                if row[0] >= len(roots):
                    virtual_units.extend(row)
    root_of, roots_in = _virtual_safe(
        ctx,
        roots.__getitem__,
        lambda s, n: roots[s : s + n],
        virtual_units,
    )
    blocked, inexact = _reasons(ctx, root_of, roots_in, virtual_units)
    # Ranges with the same roots in the same order are the same units (a residual add joins two runs):
    # one class each. A class whose roots are distinct and found in no other class is a whole group
    # with identity index maps (most of a CNN); only the other classes are taken entry by entry.
    classes: dict[tuple[int, ...], list[int]] = {}
    for ri, row in enumerate(root_rows):
        classes.setdefault(row, []).append(ri)
    flat = list(chain.from_iterable(classes))
    # every root in one place only (common in CNNs): no counting needed
    counts: dict[int, int] = dict.fromkeys(flat, 1) if len(set(flat)) == len(flat) else Counter(flat)
    found: list[tuple[int, int, ChannelGroup, list[int]]] = []  # (first key, smallest root, group, units)
    per_root: dict[int, dict[int, list[int]]] = {}  # root -> {class: local indices}, both increasing
    members_of: list[list[int]] = []  # class -> its ranges
    for rt, ris in classes.items():
        if sum(map(counts.__getitem__, rt)) == len(rt):
            _add_group(
                found,
                keys,
                keys_of,
                unit_kind,
                {ri: _identity_map(len(rt)) for ri in ris},
                list(rt),
                blocked,
                inexact,
            )
            continue
        ci = len(members_of)
        members_of.append(ris)
        if rt.count(rt[0]) == len(rt):  # one unit over the whole range (e.g. tied to the model input)
            d = per_root.get(rt[0])
            if d is None:
                per_root[rt[0]] = {ci: list(range(len(rt)))}
            else:
                d[ci] = list(range(len(rt)))
            continue
        get = per_root.get
        for loc, root in enumerate(rt):
            d = get(root)
            if d is None:
                per_root[root] = {ci: [loc]}
            elif ci in d:
                d[ci].append(loc)
            else:
                d[ci] = [loc]
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for root in sorted(per_root):
        by_sig.setdefault(tuple(per_root[root]), []).append(root)
    for sig, units in by_sig.items():
        c0 = sig[0]
        units.sort(key=lambda r: per_root[r][c0][0])  # unit order: index in the first member
        n = len(units)
        of_units = [per_root[r] for r in units]
        identity = list(range(n))
        maps = {}
        for ci in sig:
            lists = [d[ci] for d in of_units]
            if max(map(len, lists)) == 1:
                firsts = [locs[0] for locs in lists]
                # most members: unit i is index i
                index_map = _identity_map(n) if firsts == identity else tuple(zip(firsts))
            else:
                index_map = tuple(map(tuple, lists))
            for ri in members_of[ci]:
                maps[ri] = index_map
        _add_group(found, keys, keys_of, unit_kind, maps, units, blocked, inexact)
    return _named(found, ctx, root_of)


def _add_group(
    found: list[tuple[int, int, ChannelGroup, list[int]]],
    keys: list[tuple[str, str, int, str]],
    keys_of: list[list[int]],
    unit_kind: list[str],
    maps: dict[int, tuple[tuple[int, ...], ...]],
    units: list[int],
    blocked: dict[int, str],
    inexact: dict[int, str],
) -> None:
    """Make the group whose ranges have index maps ``maps`` and whose units are the roots ``units``
    (in unit order), and add ``(first slice, smallest root, group, units)`` to ``found``."""
    member_keys = sorted(ki for ri in maps for ki in keys_of[ri])  # trace order: the first unit kind wins
    unit, reason, inexact_reason = _group_state(keys, unit_kind, member_keys, units, blocked, inexact)
    group = ChannelGroup(
        "", len(units), unit, _members(keys, keys_of, maps), inexact_reason is None, reason, inexact_reason
    )
    found.append((member_keys[0], min(units), group, units))
