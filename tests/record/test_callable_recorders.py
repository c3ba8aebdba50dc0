"""Function and method recorders: outputs, bound inputs, patch lifetime, nesting, errors."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchpare._patch import active_patch_count
from torchpare.record import (
    FunctionInputsRecorder,
    FunctionOutputsRecorder,
    MethodInputsRecorder,
    MethodOutputsRecorder,
    RecordIndexError,
)

HERE = __name__


def scale(x, factor=2, *, shift=0):
    return x * factor + shift


def rand_int():
    return random.randint(0, 10**9)


class Toy:
    def __init__(self, base: int = 0) -> None:
        self.base = base

    def add(self, a, b=10):
        return self.base + a + b

    def items(self):
        return [self.base, self.base + 1, self.base + 2]

    @staticmethod
    def double(x):
        return 2 * x

    @classmethod
    def make(cls, base):
        return cls(base)


class ChildToy(Toy):
    """Inherits ``add``: patching ChildToy.add must not leave an override behind."""


class UsesF(nn.Module):
    def forward(self, x):
        return F.relu(x) + F.relu(-x)


def test_function_outputs_are_recorded_per_call_and_returned_unchanged():
    recorder = FunctionOutputsRecorder(f"{HERE}.rand_int")
    recorder.initialize(None)
    with recorder:
        got = [rand_int(), rand_int(), rand_int()]
    assert recorder.data_buffer == got
    assert recorder.get_record_data(record_idx=2) == got[2]


def test_function_recorder_records_calls_made_through_the_module_attribute_inside_a_model():
    recorder = FunctionOutputsRecorder("torch.nn.functional.relu")
    x = torch.randn(3)
    with recorder:
        UsesF()(x)
    assert len(recorder.data_buffer) == 2
    torch.testing.assert_close(recorder.get_record_data(1), F.relu(-x))


def test_function_inputs_are_bound_to_the_signature_with_defaults_in_signature_order():
    recorder = FunctionInputsRecorder(f"{HERE}.scale")
    with recorder:
        scale(1)
        scale(x=2, shift=5, factor=3)
    assert recorder.data_buffer == [(1, 2, 0), (2, 3, 5)]
    assert recorder.arg_names == ["x", "factor", "shift"]
    assert recorder.get_record_data(1, data_idx="shift") == 5
    with pytest.raises(RecordIndexError, match=r"no argument 'shfit'.*did you mean 'shift'"):
        recorder.get_record_data(1, data_idx="shfit")


def test_method_inputs_exclude_self_and_apply_defaults():
    recorder = MethodInputsRecorder(f"{HERE}.Toy.add")
    with recorder:
        Toy(1).add(5)
        Toy(2).add(b=1, a=3)
    assert recorder.data_buffer == [(5, 10), (3, 1)]
    assert recorder.arg_names == ["a", "b"]


def test_method_outputs_are_recorded_for_every_instance_and_data_idx_indexes_lists():
    recorder = MethodOutputsRecorder(f"{HERE}.Toy.items")
    with recorder:
        Toy(0).items()
        Toy(10).items()
    assert recorder.get_record_data(record_idx=1, data_idx=2) == 12
    assert len(recorder.data_buffer) == 2


def test_static_and_class_methods_are_recorded_and_restored_as_such():
    static, klass = MethodOutputsRecorder(f"{HERE}.Toy.double"), MethodInputsRecorder(f"{HERE}.Toy.make")
    before_static, before_class = Toy.__dict__["double"], Toy.__dict__["make"]
    with static, klass:
        assert Toy.double(4) == 8 and Toy(1).double(5) == 10
        made = Toy.make(7)
    assert static.data_buffer == [8, 10]
    assert klass.data_buffer == [(7,)] and made.base == 7
    assert Toy.__dict__["double"] is before_static and Toy.__dict__["make"] is before_class


def test_inherited_method_patch_is_removed_from_the_subclass_on_exit():
    recorder = MethodOutputsRecorder(f"{HERE}.ChildToy.add")
    with recorder:
        assert ChildToy(1).add(1) == 12
        assert Toy(1).add(1) == 12  # the base class is not patched
    assert recorder.data_buffer == [12]
    assert "add" not in ChildToy.__dict__


def test_patch_is_undone_when_the_forward_raises():
    original = scale
    recorder = FunctionOutputsRecorder(f"{HERE}.scale")
    with pytest.raises(ZeroDivisionError), recorder:
        scale(1)
        1 / 0  # noqa: B018
    assert globals()["scale"] is original
    assert recorder.data_buffer == [2]
    assert active_patch_count() == 0


def test_two_recorders_on_one_function_both_record_and_restore_in_any_exit_order():
    original = scale
    a, b = FunctionOutputsRecorder(f"{HERE}.scale"), FunctionInputsRecorder(f"{HERE}.scale")
    a.__enter__()
    b.__enter__()
    scale(1)
    a.__exit__(None, None, None)  # out of order: the outer one leaves first
    scale(2)
    assert globals()["scale"] is not original  # b is still active
    b.__exit__(None, None, None)
    scale(3)
    assert globals()["scale"] is original
    assert a.data_buffer == [2]
    assert b.data_buffer == [(1, 2, 0), (2, 2, 0)]


def test_nested_with_blocks_of_two_recorders_restore_lifo():
    original = Toy.add
    outer, inner = MethodOutputsRecorder(f"{HERE}.Toy.add"), MethodOutputsRecorder(f"{HERE}.Toy.add")
    with outer:
        Toy().add(1)
        with inner:
            Toy().add(2)
        Toy().add(3)
    assert outer.data_buffer == [11, 12, 13]
    assert inner.data_buffer == [12]
    assert Toy.__dict__["add"] is original


def test_code_that_imported_the_function_before_the_context_is_not_recorded():
    from torch.nn.functional import relu  # bound before patching: documented limitation

    recorder = FunctionOutputsRecorder("torch.nn.functional.relu")
    with recorder:
        relu(torch.ones(1))
    assert recorder.data_buffer == []


def test_bad_paths_name_the_path_and_the_closest_names():
    with pytest.raises(
        AttributeError, match=r"FunctionOutputsRecorder\(source=.*'rand_itn'.*did you mean 'rand_int'"
    ):
        FunctionOutputsRecorder(f"{HERE}.rand_itn").initialize()
    with pytest.raises(AttributeError, match=r"MethodOutputsRecorder.*'ad'.*did you mean 'add'"):
        MethodOutputsRecorder(f"{HERE}.Toy.ad").initialize()
    with pytest.raises(ValueError, match="not an import path"):
        FunctionOutputsRecorder("scale").initialize()


def test_function_and_method_kinds_are_checked():
    with pytest.raises(TypeError, match="use the Method\\* variant"):
        FunctionOutputsRecorder(f"{HERE}.Toy.add").initialize()
    with pytest.raises(TypeError, match="use the Function\\* variant"):
        MethodOutputsRecorder(f"{HERE}.scale.__call__").initialize()


def test_methods_of_builtin_types_cannot_be_patched_and_say_so():
    recorder = MethodOutputsRecorder("builtins.int.bit_length")
    with (
        pytest.raises(
            TypeError, match=r"MethodOutputsRecorder\(source='builtins.int.bit_length'\): cannot patch"
        ),
        recorder,
    ):
        pass
    assert active_patch_count() == 0 and not recorder.active


def test_recursive_calls_are_each_recorded():
    recorder = FunctionOutputsRecorder(f"{HERE}.fact")
    with recorder:
        assert fact(4) == 24
    assert recorder.data_buffer == [1, 2, 6, 24]


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)
