"""Channel groups: the coupled parameter slices that must be pruned together, built from the union-find.

Each union-find component is one *unit* (a channel, a head...). Components touching the same set of
parameter slices form one :class:`ChannelGroup`, whose units are ordered by their index in the first
member. A component holding a marked element is blocked (model input/output, ignored module, unknown op).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchpare.prune.graph.propagation import LabelContext

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


def _resolve_free(ctx: LabelContext, roots: np.ndarray) -> list[tuple[tuple[str, str, int, str], np.ndarray]]:
    """Map free parameters (one element per flat position) back to ``(dim, index)`` slices.

    Returns ``(key, root_of_index)`` pairs: the dim whose every index lies in a single component.
    A parameter whose components cut across dims is marked blocked.
    """
    out = []
    linked = np.frombuffer(bytes(ctx.uf.linked), dtype=np.uint8).astype(bool)
    for name, (start, shape) in ctx.free.items():
        owner, _, pname = name.rpartition(".")
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


def build_groups(ctx: LabelContext) -> list[ChannelGroup]:
    """Turn the finished union-find of ``ctx`` into channel groups (blocked ones included)."""
    if not ctx.free and sum(info.size for info in ctx.slices.values()) <= _SMALL:
        return _build_groups_small(ctx)
    roots = _roots(ctx.uf.parent)
    free = _resolve_free(ctx, roots)
    keys: list[tuple[str, str, int, str]] = list(ctx.slices)
    unit_kind: dict[tuple[str, str, int, str], str] = {key: info.unit for key, info in ctx.slices.items()}
    infos = ctx.slices.values()
    starts = np.fromiter((info.start for info in infos), dtype=np.int64, count=len(keys))
    sizes = np.fromiter((info.size for info in infos), dtype=np.int64, count=len(keys))
    # one entry per (slice, index): its key, its local index and the root of its element
    e_key = [np.repeat(np.arange(len(keys), dtype=np.int64), sizes)]
    e_local = [np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)]
    e_root = [roots[e_local[0] + np.repeat(starts, sizes)]]
    for key, root_of_index in free:
        if key in unit_kind:
            continue
        unit_kind[key] = "channel"
        e_root.append(root_of_index)
        e_key.append(np.full(len(root_of_index), len(keys), dtype=np.int64))
        e_local.append(np.arange(len(root_of_index), dtype=np.int64))
        keys.append(key)
    if not keys:
        return []
    r, k, loc = np.concatenate(e_root), np.concatenate(e_key), np.concatenate(e_local)
    # entries are already ordered by (key, local index): a stable sort by root orders by all three
    # (an unstable sort of root * n + position is that stable sort, and several times faster)
    order = np.argsort(r * len(r) + np.arange(len(r)))
    r, k, loc = r[order], k[order], loc[order]
    # boundaries of (root, key) runs and of root runs in the sorted entries
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

    find = {int(e): int(roots[e]) for e in ctx.sentinels}.__getitem__
    inexact: dict[int, str] = {}
    if ctx.inexact:
        elements = list(ctx.inexact)
        for root, element in zip(roots[elements].tolist(), elements):
            inexact.setdefault(root, ctx.inexact[element])
    blocked: dict[int, str] = {}
    for e in sorted(ctx.sentinels, key=lambda e: (e in ctx.fixed_reasons, e)):  # op reasons first
        blocked.setdefault(find(e), ctx.sentinels[e])

    groups: list[tuple[int, ChannelGroup]] = []
    loc_list: list[int] | None = None
    for first_pairs, n_keys in _by_signature(pair_key_arr, root_first):
        sig = pair_key[first_pairs[0] : first_pairs[0] + n_keys]  # sorted keys of the unit's slices
        first_pairs = first_pairs[np.argsort(first_loc[first_pairs], kind="stable")]  # unit order
        n = len(first_pairs)
        pidx = first_pairs[None, :] + np.arange(len(sig))[:, None]  # (member, unit) -> pair
        locs = first_loc[pidx]
        all_single = single[pidx].all(axis=1).tolist()
        identity = (locs == np.arange(n)).all(axis=1).tolist()
        members = []
        for j, ki in enumerate(sig):
            if identity[j] and all_single[j]:
                index_map = _identity_map(n)  # most members: unit i is index i
            elif all_single[j]:
                index_map = tuple(zip(locs[j].tolist()))
            else:
                if loc_list is None:
                    loc_list = loc.tolist()
                index_map = tuple(
                    tuple(loc_list[lo:hi])
                    for lo, hi in zip(pair_start[pidx[j]].tolist(), pair_end[pidx[j]].tolist())
                )
            members.append(GroupMember(*keys[ki][:3], index_map, keys[ki][3]))
        group_roots = [roots_of_pairs[i] for i in first_pairs.tolist()]
        reason = next((blocked[root] for root in group_roots if root in blocked), None)
        if reason is None and not any(keys[ki][3] == "out" for ki in sig):
            reason = "no layer produces these channels (they come from a constant or padding)"
        kinds = [unit_kind[keys[ki]] for ki in sig if unit_kind[keys[ki]] != "channel"]
        inexact_reason = next((inexact[root] for root in group_roots if root in inexact), None)
        exact = inexact_reason is None
        unit = kinds[0] if kinds else "channel"
        groups.append((sig[0], ChannelGroup("", len(group_roots), unit, tuple(members), exact, reason, inexact_reason)))
    return _named(groups)


def _named(groups: list[tuple[int, ChannelGroup]]) -> list[ChannelGroup]:
    """Sort groups by their first slice and give them their readable ids."""
    groups.sort(key=lambda g: g[0])
    used: dict[str, int] = {}
    named = []
    for _, g in groups:
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
    return named


# Up to this many (slice, index) entries (MLPs, tiny CNNs), plain Python beats the fixed cost of the
# numpy passes above; both give identical groups.
_SMALL = 450


def _build_groups_small(ctx: LabelContext) -> list[ChannelGroup]:
    """:func:`build_groups` without numpy, for small models without free parameters."""
    roots = ctx.uf.parent[:]
    for i in range(len(roots)):
        r = roots[i]
        if roots[r] != r:
            while roots[r] != r:
                r = roots[r]
            j = i
            while roots[j] != r:
                roots[j], j = r, roots[j]
    keys = list(ctx.slices)
    # root -> {key index: local indices}, keys in increasing order, indices increasing
    per_root: dict[int, dict[int, list[int]]] = {}
    get = per_root.get
    for ki, info in enumerate(ctx.slices.values()):
        start = info.start
        for loc, root in enumerate(roots[start : start + info.size]):
            d = get(root)
            if d is None:
                per_root[root] = {ki: [loc]}
            elif ki in d:
                d[ki].append(loc)
            else:
                d[ki] = [loc]
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for root in sorted(per_root):
        by_sig.setdefault(tuple(per_root[root]), []).append(root)

    inexact: dict[int, str] = {}
    for element, why in ctx.inexact.items():
        inexact.setdefault(roots[element], why)
    blocked: dict[int, str] = {}
    for e in sorted(ctx.sentinels, key=lambda e: (e in ctx.fixed_reasons, e)):  # op reasons first
        blocked.setdefault(roots[e], ctx.sentinels[e])

    groups: list[tuple[int, ChannelGroup]] = []
    for sig, units in by_sig.items():
        k0 = sig[0]
        units.sort(key=lambda r: per_root[r][k0][0])  # unit order: index in the first member
        n = len(units)
        members = []
        of_units = [per_root[r] for r in units]
        identity = list(range(n))
        for ki in sig:
            lists = [d[ki] for d in of_units]
            if max(map(len, lists)) == 1:
                firsts = [locs[0] for locs in lists]
                # most members: unit i is index i
                index_map = _identity_map(n) if firsts == identity else tuple(zip(firsts))
            else:
                index_map = tuple(map(tuple, lists))
            key = keys[ki]
            members.append(GroupMember(key[0], key[1], key[2], index_map, key[3]))
        reason = next((blocked[root] for root in units if root in blocked), None)
        if reason is None and not any(keys[ki][3] == "out" for ki in sig):
            reason = "no layer produces these channels (they come from a constant or padding)"
        kinds = [ctx.slices[keys[ki]].unit for ki in sig if ctx.slices[keys[ki]].unit != "channel"]
        inexact_reason = next((inexact[root] for root in units if root in inexact), None)
        unit = kinds[0] if kinds else "channel"
        groups.append(
            (k0, ChannelGroup("", n, unit, tuple(members), inexact_reason is None, reason, inexact_reason))
        )
    return _named(groups)
