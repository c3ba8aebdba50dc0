"""FunctionOutputsDelivery: teacher records, student replays, FIFO order, errors, restoring."""

import random

import pytest
import torch

from torchpare._patch import active_patch_count
from torchpare.deliver import (
    DeliveryQueueEmptyError,
    DeliveryQueueFullError,
    FunctionOutputsDelivery,
)
from torchpare.registry import DELIVERIES

HERE = __name__
CALLS = []


def toy_func():
    CALLS.append(1)
    return random.randint(0, 10**9)


def random_crop_params(size, crop):
    top = int(torch.randint(0, size - crop + 1, (1,)))
    left = int(torch.randint(0, size - crop + 1, (1,)))
    return top, left


def test_student_gets_the_teachers_value():
    delivery = FunctionOutputsDelivery(max_keep_data=1, func_path=f"{HERE}.toy_func")
    with delivery:
        delivery.override_data = False
        teacher = toy_func()
        delivery.override_data = True
        student = toy_func()
    assert student == teacher
    assert len(delivery) == 0


def test_student_does_not_call_the_real_function():
    CALLS.clear()
    delivery = FunctionOutputsDelivery(1, f"{HERE}.toy_func")
    with delivery:
        toy_func()
        delivery.override_data = True
        toy_func()
    assert len(CALLS) == 1


def test_two_calls_come_back_in_fifo_order():
    delivery = FunctionOutputsDelivery(max_keep_data=2, func_path=f"{HERE}.toy_func")
    with delivery:
        first, second = toy_func(), toy_func()
    assert first != second
    delivery.override_data = True
    with delivery:  # teacher and student may use separate contexts: the queue persists
        assert toy_func() == first
        assert toy_func() == second


def test_teacher_calling_more_than_max_keep_data_names_path_and_reason():
    CALLS.clear()
    delivery = FunctionOutputsDelivery(max_keep_data=1, func_path=f"{HERE}.toy_func")
    with delivery:
        toy_func()
        with pytest.raises(
            DeliveryQueueFullError, match=rf"'{HERE}.toy_func'.*max_keep_data=1.*teacher side"
        ):
            toy_func()
    assert len(CALLS) == 1  # the refused call did not run (no randomness consumed)


def test_student_before_teacher_names_path_and_reason():
    delivery = FunctionOutputsDelivery(max_keep_data=1, func_path=f"{HERE}.toy_func")
    delivery.override_data = True
    with (
        pytest.raises(
            DeliveryQueueEmptyError, match=rf"'{HERE}.toy_func'.*queue is empty.*before the teacher"
        ),
        delivery,
    ):
        toy_func()
    assert not delivery.active and active_patch_count() == 0


def _crop(image, top, left, size=8):
    return image[:, top : top + size, left : left + size]


def test_random_crop_parameters_match_between_teacher_and_student():
    delivery = FunctionOutputsDelivery(max_keep_data=4, func_path=f"{HERE}.random_crop_params")
    image = torch.randn(3, 16, 16)
    with delivery:
        teacher_crops = [_crop(image, *random_crop_params(16, 8)) for _ in range(4)]
        delivery.override_data = True
        student_crops = [_crop(image, *random_crop_params(16, 8)) for _ in range(4)]
    for t, s in zip(teacher_crops, student_crops, strict=True):
        assert torch.equal(t, s)


def test_function_is_restored_on_exit_and_when_the_body_raises():
    original = toy_func
    delivery = FunctionOutputsDelivery(2, f"{HERE}.toy_func")
    with pytest.raises(KeyError), delivery:
        assert globals()["toy_func"] is not original
        raise KeyError("boom")
    assert globals()["toy_func"] is original and active_patch_count() == 0
    delivery.clear()
    for _ in range(100):
        with delivery:
            toy_func()
        delivery.clear()
    assert globals()["toy_func"] is original and active_patch_count() == 0


def test_outside_the_context_the_function_runs_normally():
    delivery = FunctionOutputsDelivery(1, f"{HERE}.toy_func")
    delivery.override_data = True
    toy_func()  # no queue involved
    assert len(delivery) == 0


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match=r"max_keep_data must be >= 1, got 0"):
        FunctionOutputsDelivery(0, f"{HERE}.toy_func")
    with pytest.raises(TypeError, match="max_keep_data must be an int"):
        FunctionOutputsDelivery(1.5, f"{HERE}.toy_func")
    with pytest.raises(TypeError, match="override_data must be True or False"):
        FunctionOutputsDelivery(1, f"{HERE}.toy_func").override_data = 1


def test_bad_path_fails_on_enter_naming_the_closest_name():
    delivery = FunctionOutputsDelivery(1, f"{HERE}.toy_fnc")
    with pytest.raises(AttributeError, match=r"FunctionOutputsDelivery.*'toy_fnc'.*did you mean 'toy_func'"):
        delivery.__enter__()
    assert not delivery.active


def test_registry_finds_the_delivery_by_class_name_and_alias():
    assert (
        DELIVERIES.get("FunctionOutputs")
        is FunctionOutputsDelivery
        is DELIVERIES.get("FunctionOutputsDelivery")
    )
    built = DELIVERIES.build({"type": "FunctionOutputs", "max_keep_data": 3, "func_path": f"{HERE}.toy_func"})
    assert built.max_keep_data == 3 and built.func_path == f"{HERE}.toy_func"


def test_a_recorder_on_the_same_function_records_what_the_student_receives():
    from torchpare.record import FunctionOutputsRecorder

    recorder = FunctionOutputsRecorder(f"{HERE}.toy_func")
    delivery = FunctionOutputsDelivery(1, f"{HERE}.toy_func")
    with recorder, delivery:  # the recorder is entered first but still wraps the delivery
        teacher = toy_func()
        delivery.override_data = True
        student = toy_func()
    assert recorder.data_buffer == [teacher, student] and teacher == student
    assert active_patch_count() == 0
