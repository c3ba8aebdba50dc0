"""Channel groups: the coupled parameter slices that must be pruned together, built from the union-find.

Each union-find component is one *unit* (a channel, a head...). Components touching the same set of
parameter slices form one :class:`ChannelGroup`, whose units are ordered by their index in the first
member. A component holding a marked element is blocked (model input/output, ignored module, unknown op).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from torchpare.prune.graph.propagation import LabelContext

__all__ = ["GroupMember", "ChannelGroup", "build_groups"]


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
    """

    id: str
    size: int
    unit: str
    members: tuple[GroupMember, ...]
    exact: bool
    blocked_by: str | None

    def module_names(self) -> list[str]:
        """Names of the modules owning a member, in order, without repeats."""
        return list(dict.fromkeys(m.module_name for m in self.members))

    def __repr__(self) -> str:
        state = f", blocked_by={self.blocked_by!r}" if self.blocked_by else ""
        return (
            f"ChannelGroup(id={self.id!r}, size={self.size}, unit={self.unit!r}, "
            f"members={len(self.members)}, exact={self.exact}{state})"
        )


def _resolve_free(ctx: LabelContext) -> dict[tuple[str, str, int, str], dict[int, list[int]]]:
    """Map free parameters (one element per flat position) back to ``(dim, index)`` slices."""
    out: dict[tuple[str, str, int, str], dict[int, list[int]]] = {}
    find = ctx.uf.find
    for name, (start, shape) in ctx.free.items():
        owner, _, pname = name.rpartition(".")
        n = 1
        for s in shape:
            n *= s
        roots = [find(start + i) for i in range(n)]
        chosen = None
        for d in range(len(shape)):
            if shape[d] <= 1:
                continue
            stride = 1
            for s in shape[d + 1 :]:
                stride *= s
            per_index: list[int | None] = [None] * shape[d]
            ok = True
            for i, r in enumerate(roots):
                k = (i // stride) % shape[d]
                if per_index[k] is None:
                    per_index[k] = r
                elif per_index[k] != r:
                    ok = False
                    break
            if ok and len(set(per_index)) == shape[d]:
                chosen = (d, per_index)
                break
        if chosen is None:
            if len(set(roots)) > 1:
                reason = f"free parameter {name!r} couples channels on several dims"
                for r in set(roots):
                    ctx._mark(r, reason, False)
            continue
        d, per_index = chosen
        entry: dict[int, list[int]] = defaultdict(list)
        for k, r in enumerate(per_index):
            entry[r].append(k)  # type: ignore[index]
        out[(owner, pname, d, "out")] = entry
    return out


def build_groups(ctx: LabelContext) -> list[ChannelGroup]:
    """Turn the finished union-find of ``ctx`` into channel groups (blocked ones included)."""
    free = _resolve_free(ctx)
    find = ctx.uf.find
    units: dict[int, dict[tuple[str, str, int, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    key_order: dict[tuple[str, str, int, str], int] = {}
    unit_kind: dict[tuple[str, str, int, str], str] = {}
    for key, info in ctx.slices.items():
        key_order[key] = len(key_order)
        unit_kind[key] = info.unit
        for i in range(info.size):
            units[find(info.start + i)][key].append(i)
    for key, entry in free.items():
        key_order.setdefault(key, len(key_order))
        unit_kind[key] = "channel"
        for old_root, idx in entry.items():
            units[find(old_root)][key].extend(idx)
    blocked: dict[int, str] = {}
    for s in sorted(ctx.sentinels, key=lambda e: (e in ctx.fixed_reasons, e)):  # op reasons first
        blocked.setdefault(find(s), ctx.sentinels[s])
    inexact = {find(e) for e in ctx.inexact}

    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for root, members in units.items():
        sig = tuple(sorted(members, key=key_order.__getitem__))
        by_signature[sig].append(root)

    groups: list[tuple[int, ChannelGroup]] = []
    for sig, roots in by_signature.items():
        roots.sort(key=lambda r: units[r][sig[0]][0])
        members = tuple(
            GroupMember(k[0], k[1], k[2], tuple(tuple(units[r][k]) for r in roots), k[3]) for k in sig
        )
        reason = next((blocked[r] for r in roots if r in blocked), None)
        if reason is None and not any(k[3] == "out" for k in sig):
            reason = "no layer produces these channels (they come from a constant or padding)"
        kinds = [unit_kind[k] for k in sig if unit_kind[k] != "channel"]
        exact = not any(r in inexact for r in roots)
        groups.append(
            (
                key_order[sig[0]],
                ChannelGroup("", len(roots), kinds[0] if kinds else "channel", members, exact, reason),
            )
        )
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
        named.append(ChannelGroup(gid, g.size, g.unit, g.members, g.exact, g.blocked_by))
    return named
