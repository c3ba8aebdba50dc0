"""The graph build's shortcuts give exactly what the general code gives.

The build skips work where the answer is known without it: groups over element ranges in plain
Python, channel runs recognised by their storage, reshapes of channel labels computed from shapes,
parameter-free modules as leaves, and class hooks instead of trace hooks. Each is checked here against
the general path it replaces.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchpare.prune.graph.group as group_module
from torchpare.prune import DependencyGraph
from torchpare.prune.labels import LabelContext, UnionFind
from torchpare.prune.rules import CLASS_HOOKS, register_class_hook
from torchpare.prune.rules.base import Call
from torchpare.prune.rules.ops import ElementwiseModuleRule
from torchpare.prune.rules.registry import run_class_hooks
from torchpare.prune.rules.shape import _reshape_along
from torchpare.zoo import ZOO


def _snapshot(graph: DependencyGraph) -> list[tuple]:
    return [
        (g.id, g.size, g.unit, g.members, g.exact, g.blocked_by, g.inexact_reason) for g in graph.all_groups()
    ]


def _middle_leaf(model: nn.Module) -> str:
    leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
    return leaves[len(leaves) // 2]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_python_and_numpy_group_assembly_agree_on_every_zoo_model(name, monkeypatch):
    torch.manual_seed(0)
    model, x = ZOO[name]()
    model.eval()
    for ignored in ([], [_middle_leaf(model)]):
        monkeypatch.setattr(group_module, "_SMALL", 10**9)
        python = _snapshot(DependencyGraph.build(model, x, ignored=ignored))
        monkeypatch.setattr(group_module, "_SMALL", 0)
        vectorized = _snapshot(DependencyGraph.build(model, x, ignored=ignored))
        assert python == vectorized
        assert python  # every zoo model has groups


def _random_history(n: int, pairs: list[tuple[int, int]]) -> tuple[UnionFind, UnionFind]:
    ufs = UnionFind(), UnionFind()
    for uf in ufs:
        uf.add(n)
        for a, b in pairs:
            uf.union(a % n, b % n)
    return ufs


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    a=st.integers(0, 40),
    b=st.integers(0, 40),
    history=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=8),
)
def test_union_runs_gives_the_components_of_pairwise_unions(n, a, b, history):
    size = max(a, b) + n
    fast, slow = _random_history(size, history)
    fast.union_runs(a, b, n)
    slow.union_many(list(range(a, a + n)), list(range(b, b + n)))
    for x in range(size):
        for y in range(size):
            assert (fast.find(x) == fast.find(y)) == (slow.find(x) == slow.find(y))
    assert fast.linked == slow.linked


def test_run_start_recognises_views_of_runs_and_nothing_else():
    ctx = LabelContext(nn.Linear(1, 1))
    ctx.fresh(3)
    ids = ctx.fresh(8)  # elements 3..10
    assert ctx.run_start(ids) == 3
    assert ctx.run_start(ids[2:5]) == 5
    assert ctx.run_start(ids[::2]) is None  # strided: not consecutive
    assert ctx.run_start(ids.clone()) is None  # same values, but not known without reading them
    assert ctx.run_start(ids.flip(0)) is None
    assert ctx.run_start(ids[:0]) is None
    assert ctx.run_start(ids.reshape(2, 4)) is None
    assert ctx.run_start(ctx.neutral((1,))) is None  # [-1] is no run of elements
    assert ctx.run_start(ctx.constant(4, (1,))) == 4
    assert ctx.run_start(ctx.constant(4, (3,))) is None


def test_contexts_share_no_label_storage():
    a, b = LabelContext(nn.Linear(1, 1)), LabelContext(nn.Linear(1, 1))
    ids_a, ids_b = a.fresh(4), b.fresh(4)
    assert torch.equal(ids_a, ids_b)
    assert ids_a.untyped_storage().data_ptr() != ids_b.untyped_storage().data_ptr()
    assert b.run_start(ids_a) is None  # a run of another context is not known here


def test_channels_of_an_along_label_are_its_ids():
    ctx = LabelContext(nn.Linear(1, 1))
    ids = ctx.fresh(4)
    lab = ctx.along(ids, (2, 4, 3, 3), 1)
    assert torch.equal(lab, ids.reshape(1, 4, 1, 1).expand(2, 4, 3, 3))
    assert ctx.channels(lab, 1) is ids
    assert ctx.along_ids(lab) == (ids, 1)
    assert ctx.along_ids(lab.clone()) is None


@st.composite
def _reshapes(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    dim = draw(st.integers(0, len(shape) - 1))
    # a target shape with the same number of entries: merge neighbours, split, add or drop ones
    target = list(shape)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["merge", "one", "drop"]))
        if op == "merge" and len(target) > 1:
            i = draw(st.integers(0, len(target) - 2))
            target[i : i + 2] = [target[i] * target[i + 1]]
        elif op == "one":
            target.insert(draw(st.integers(0, len(target))), 1)
        elif op == "drop" and 1 in target and len(target) > 1:
            target.remove(1)
    return tuple(shape), dim, tuple(target)


@settings(max_examples=200, deadline=None)
@given(_reshapes())
def test_reshape_shortcut_equals_replaying_the_reshape(case):
    shape, dim, target = case
    ctx = LabelContext(nn.Linear(1, 1))
    lab = ctx.along(ctx.fresh(shape[dim]), shape, dim)
    fast = _reshape_along(ctx, lab, torch.empty(target))
    if fast is not None:
        assert torch.equal(fast, lab.reshape(target))
    constant = ctx.constant(7, shape)
    assert torch.equal(_reshape_along(ctx, constant, torch.empty(target)), constant.reshape(target))


def _groups_of(model: nn.Module, x: torch.Tensor) -> list[tuple]:
    return [(g.size, [(m.path, m.dim, m.index_map) for m in g.members]) for g in DependencyGraph.build(model, x).groups()]


class _FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        h = F.dropout(F.gelu(torch.relu(self.conv(x))), 0.0, training=False)
        h, _ = F.max_pool2d(h, 2, return_indices=True)
        h = F.adaptive_avg_pool2d(h, 2)
        return self.fc(torch.flatten(h, 1))


class _ModuleNet(_FunctionalNet):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Sequential(nn.ReLU(), nn.GELU(), nn.Dropout(0.0), nn.Identity())
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()

    def forward(self, x):
        h, _ = self.pool(self.act(self.conv(x)))
        return self.fc(self.flatten(self.avg(h)))


def test_activation_pool_and_flatten_modules_as_leaves_give_the_functional_groups():
    torch.manual_seed(0)
    functional, modules = _FunctionalNet().eval(), _ModuleNet().eval()
    x = torch.randn(2, 2, 4, 4)
    found = _groups_of(modules, x)
    assert found == _groups_of(functional, x)
    # flatten after conv: channel c is the 4 columns c*4 .. c*4+3 of fc
    ((size, members),) = found
    assert size == 4
    assert dict((p, m) for p, _, m in members)["fc.weight"][1] == tuple(range(4, 8))


def test_unflatten_module_that_splits_channels_is_blocked():
    model = nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (2, 3)), nn.Flatten(), nn.Linear(6, 2)).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 3))
    assert graph.groups() == []
    assert "reshape splits channels" in graph.group("0").blocked_by


def test_elementwise_module_rule_blocks_a_shape_change():
    ctx = LabelContext(nn.Linear(1, 1))
    x = torch.zeros(2, 3)
    ctx.set_label(x, ctx.along(ctx.fresh(3), x.shape, 1))
    out = ElementwiseModuleRule().propagate(ctx, Call("act", nn.ReLU(), None, (x,), {}, torch.zeros(6)))
    assert out.shape == (6,)
    assert any("output shape differs" in reason for reason in ctx.sentinels.values())


def test_class_hooks_see_each_class_once_and_again_after_a_new_hook():
    seen: list[type] = []
    late: list[type] = []
    register_class_hook(seen.append)
    try:
        run_class_hooks({nn.Linear, nn.ReLU})
        run_class_hooks({nn.Linear, nn.Conv2d})
        assert sorted(c.__name__ for c in seen) == ["Conv2d", "Linear", "ReLU"]
        register_class_hook(late.append)  # a new hook is offered the classes seen before it
        register_class_hook(late.append)  # idempotent
        DependencyGraph.build(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2))
        assert nn.Linear in late and nn.Sequential in late
    finally:
        CLASS_HOOKS[:] = [h for h in CLASS_HOOKS if getattr(h, "__self__", None) not in (seen, late)]


class _BareNorm(nn.Module):
    """A LayerNorm without parameters whose forward reads its shape from an attribute."""

    def __init__(self, n: int, attr: str) -> None:
        super().__init__()
        self.attr = attr
        setattr(self, attr, (n,))

    def forward(self, x):
        return F.layer_norm(x, getattr(self, self.attr))


class _ShapeFromInput(nn.Module):
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:])


@pytest.mark.parametrize("attr", ["normalized_shape", "dims"])
def test_norm_shape_held_in_an_attribute_shrinks_with_its_channels(attr):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), _BareNorm(6, attr), _ShapeFromInput(), nn.Linear(6, 2)).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 3))
    assert graph.ctx.size_units[0][:3] == ("1", attr, -1)
    graph.prune({"0": [1, 4]})
    assert getattr(model[1], attr) == (4,)
    assert model(torch.randn(2, 3)).shape == (2, 2)
    assert graph.group("0").size == 4


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_permute_and_transpose_shortcuts_equal_replaying_them(data):
    from torchpare.prune.rules.shape import _permute_along

    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    dim = data.draw(st.integers(0, len(shape) - 1))
    ctx = LabelContext(nn.Linear(1, 1))
    x = torch.zeros(shape)
    lab = ctx.along(ctx.fresh(shape[dim]), shape, dim)
    ctx.set_label(x, lab)
    perm = data.draw(st.permutations(range(len(shape))))
    out = x.permute(perm)
    fast = _permute_along(ctx, Call("", None, torch.Tensor.permute, (x, *perm), {}, out))
    assert fast is not None and torch.equal(fast, lab.permute(perm))
    a, b = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(st.integers(-len(shape), len(shape) - 1))
    out = x.transpose(a, b)
    fast = _permute_along(ctx, Call("", None, torch.transpose, (x, a, b), {}, out))
    assert fast is not None and torch.equal(fast, lab.transpose(a, b))


def _partition(ctx: LabelContext, n: int) -> list[int]:
    """Component of each element, as the index of its first member (comparable across contexts)."""
    first: dict[int, int] = {}
    return [first.setdefault(ctx.uf.find(e), e) for e in range(n)]


@pytest.mark.parametrize(
    ("func", "make_args"),
    [
        (torch.Tensor.add, lambda a, b: (a, b)),
        (torch.cat, lambda a, b: ([a, b], 1)),
        (F.adaptive_avg_pool2d, lambda a, b: (a, 1)),
        (torch.Tensor.reshape, lambda a, b: (a, 2, 4, 9)),
        (torch.Tensor.permute, lambda a, b: (a, 0, 2, 3, 1)),
    ],
)
def test_rules_give_the_same_labels_and_unions_with_or_without_the_along_shortcut(func, make_args):
    from torchpare.prune.rules.registry import function_rule_for

    results = []
    for shortcut in (True, False):
        ctx = LabelContext(nn.Linear(1, 1))
        a, b = torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
        for t in (a, b):
            lab = ctx.along(ctx.fresh(4), t.shape, 1)
            ctx.set_label(t, lab if shortcut else lab.clone())  # a clone is not known to be channel ids
        args = make_args(a, b)
        call = Call("", None, func, args, {}, func(*args))
        out = function_rule_for(func).propagate(ctx, call)
        assert (ctx.along_ids(out) is not None) == shortcut  # which path ran
        results.append((out.clone(), _partition(ctx, len(ctx.uf.parent))))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_trace_frees_activations_the_forward_drops_and_keeps_their_groups():
    """Labels hold large tensors weakly: an activation the forward drops is freed during the trace (as
    in a plain forward), and a new tensor that reuses its id gets no stale label."""
    import weakref

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 8)
            self.c = nn.Linear(8, 3)
            self.freed: list[bool] = []

        def forward(self, x):
            h = self.a(x).relu()
            ref = weakref.ref(h)
            h = self.b(h) + 1.0  # the ReLU's output is dropped here
            self.freed.append(ref() is None)
            for _ in range(20):  # fresh tensors, some of them at the freed ids
                h = h * 1.0
            return self.c(h)

    net = Net()
    graph = DependencyGraph.build(net, torch.randn(4096, 4))  # activations of 32k entries
    assert net.freed == [True]
    assert [(g.id, g.size, [m.path for m in g.members]) for g in graph.groups()] == [
        ("a", 8, ["a.weight", "a.bias", "b.weight"]),
        ("b", 8, ["b.weight", "b.bias", "c.weight"]),
    ]


def test_a_label_context_dropped_without_release_is_freed_at_once():
    """The label table's weak references hold their context weakly: no reference cycle keeps a context
    (and the labels it holds) alive until the next garbage collection."""
    import gc
    import weakref

    from torchpare.prune.graph.trace import trace_labels

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ctx = LabelContext(net)
        x = torch.randn(4096, 4)  # activations of 32k entries: held weakly
        out = trace_labels(net, x, ctx)
        assert ctx.has_label(out)
        alive = weakref.ref(ctx)
        del ctx
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
