"""Property: any sequence of pushes and pops behaves as a bounded FIFO or raises the documented error."""

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from torchpare.deliver import DeliveryQueueEmptyError, DeliveryQueueFullError, FunctionOutputsDelivery

HERE = __name__
SOURCE = iter(range(10**9))


def produce():
    return next(SOURCE)


ops = st.lists(st.sampled_from(["push", "pop"]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 5), operations=ops)
def test_push_pop_sequences_behave_as_a_bounded_fifo(capacity, operations):
    delivery = FunctionOutputsDelivery(capacity, f"{HERE}.produce")
    model: deque[int] = deque()
    counter = 0
    for op in operations:
        if op == "push":
            if len(model) == capacity:
                try:
                    delivery.push(counter)
                except DeliveryQueueFullError as err:
                    assert f"max_keep_data={capacity}" in str(err) and f"{HERE}.produce" in str(err)
                else:
                    raise AssertionError("push onto a full queue must raise")
            else:
                delivery.push(counter)
                model.append(counter)
            counter += 1
        else:
            if not model:
                try:
                    delivery.pop()
                except DeliveryQueueEmptyError as err:
                    assert "queue is empty" in str(err) and f"{HERE}.produce" in str(err)
                else:
                    raise AssertionError("pop from an empty queue must raise")
            else:
                assert delivery.pop() == model.popleft()
        assert list(delivery.data_queue) == list(model)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 4), sides=st.lists(st.booleans(), max_size=20))
def test_patched_calls_replay_teacher_outputs_in_order_or_raise(capacity, sides):
    """``sides[i]`` is override_data for the i-th call through the patched function."""
    delivery = FunctionOutputsDelivery(capacity, f"{HERE}.produce")
    expected: deque[int] = deque()
    with delivery:
        for student in sides:
            delivery.override_data = student
            if student:
                if expected:
                    assert produce() == expected.popleft()
                else:
                    try:
                        produce()
                    except DeliveryQueueEmptyError:
                        pass
                    else:
                        raise AssertionError("student call with an empty queue must raise")
            elif len(expected) == capacity:
                try:
                    produce()
                except DeliveryQueueFullError:
                    pass
                else:
                    raise AssertionError("teacher call with a full queue must raise")
            else:
                expected.append(produce())
    assert list(delivery.data_queue) == list(expected)
