"""torchpare._patch: interceptor chains, exact restoring, out-of-order removal, foreign patches."""

import inspect
import sys
import types

import pytest

from torchpare._patch import active_patch_count, patch_path, resolve_target

HERE = __name__


def greet(name: str, punctuation: str = "!") -> str:
    """Say hello."""
    return f"hello {name}{punctuation}"


class Tag:
    def __init__(self, tag):
        self.tag = tag
        self.seen = []

    def intercept(self, call_next, args, kwargs):
        self.seen.append(args)
        return f"{self.tag}({call_next(*args, **kwargs)})"


class Replace:
    def intercept(self, call_next, args, kwargs):
        return "replaced"


def test_dispatcher_keeps_name_docstring_and_signature():
    handle = patch_path(f"{HERE}.greet", Tag("a"), kind="function")
    try:
        patched = globals()["greet"]
        assert patched.__name__ == "greet" and patched.__doc__ == "Say hello."
        assert str(inspect.signature(patched)) == "(name: str, punctuation: str = '!') -> str"
    finally:
        handle.remove()


def test_latest_interceptor_is_outermost_and_removal_in_any_order_restores_exactly():
    original = greet
    a, b, c = (patch_path(f"{HERE}.greet", Tag(t), kind="function") for t in "abc")
    assert greet("x") == "c(b(a(hello x!)))"
    b.remove()
    assert greet("x") == "c(a(hello x!))"
    a.remove()
    a.remove()  # idempotent
    assert greet("x") == "c(hello x!)" and not a.active and c.active
    c.remove()
    assert greet is original and greet("x") == "hello x!" and active_patch_count() == 0


def test_an_interceptor_may_skip_the_original():
    handle = patch_path(f"{HERE}.greet", Replace(), kind="function")
    assert greet("x") == "replaced"
    handle.remove()
    assert greet("x") == "hello x!"


def test_foreign_replacement_while_patched_is_left_in_place_with_a_warning():
    module = sys.modules[HERE]
    original = greet
    handle = patch_path(f"{HERE}.greet", Tag("a"), kind="function")
    foreign = lambda name: "foreign"  # noqa: E731
    module.greet = foreign
    with pytest.warns(RuntimeWarning, match="replaced by other code"):
        handle.remove()
    assert module.greet is foreign and active_patch_count() == 0
    module.greet = original


def test_resolving_a_patched_target_describes_the_original():
    handle = patch_path(f"{HERE}.greet", Tag("a"), kind="function")
    try:
        target = resolve_target(f"{HERE}.greet", "function", who="test")
        assert isinstance(target.func, types.FunctionType) and target.func("y") == "hello y!"
    finally:
        handle.remove()


def test_a_target_resolved_during_another_patch_restores_the_true_original():
    original = greet
    first = patch_path(f"{HERE}.greet", Tag("a"), kind="function")
    stale = resolve_target(f"{HERE}.greet", "function", who="test")
    first.remove()
    from torchpare._patch import patch_target

    second = patch_target(stale, Tag("b"))
    assert greet("z") == "b(hello z!)"
    second.remove()
    assert greet is original


class Outer(Tag):
    patch_layer = 1


def test_higher_patch_layers_wrap_lower_ones_whatever_the_install_order():
    high = patch_path(f"{HERE}.greet", Outer("high"), kind="function")
    low = patch_path(f"{HERE}.greet", Tag("low"), kind="function")
    try:
        assert greet("x") == "high(low(hello x!))"
    finally:
        high.remove()
        low.remove()
    assert active_patch_count() == 0
