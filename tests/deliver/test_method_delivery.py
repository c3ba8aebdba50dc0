"""MethodOutputsDelivery: mixup teacher/student get the identical batch; class-wide patch lifetime."""

import copy
import pickle

import pytest
import torch

from torchpare.deliver import DeliveryQueueEmptyError, MethodOutputsDelivery
from torchpare.registry import DELIVERIES

HERE = __name__


class Augments:
    """Mixup: mixes a batch with a randomly permuted copy using a random lambda."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(x.shape[0])
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam


class ChildAugments(Augments):
    pass


def test_mixup_teacher_and_student_receive_the_identical_mixed_batch():
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8)
    teacher_aug, student_aug = Augments(), Augments()
    delivery = MethodOutputsDelivery(max_keep_data=1, method_path=f"{HERE}.Augments.__call__")
    with delivery:
        delivery.override_data = False
        t_x, t_ya, t_yb, t_lam = teacher_aug(x, y)
        delivery.override_data = True
        s_x, s_ya, s_yb, s_lam = student_aug(x, y)
    assert torch.equal(t_x, s_x) and torch.equal(t_yb, s_yb) and t_lam == s_lam
    assert not torch.equal(t_x, x)  # it really mixed
    a, b = teacher_aug(x, y)[0], teacher_aug(x, y)[0]
    assert not torch.equal(a, b)  # after exit: random again, no replay


def test_without_delivery_mixup_batches_differ():
    x, y = torch.randn(8, 3), torch.arange(8)
    assert not torch.equal(Augments()(x, y)[0], Augments()(x, y)[0])


def test_method_patch_covers_every_instance_while_open_and_nothing_after():
    original = Augments.__dict__["__call__"]
    delivery = MethodOutputsDelivery(2, f"{HERE}.Augments.__call__")
    x, y = torch.randn(4, 2), torch.arange(4)
    with delivery:
        assert Augments.__dict__["__call__"] is not original
        Augments()(x, y)
        Augments(0.5)(x, y)
        assert len(delivery) == 2
    assert Augments.__dict__["__call__"] is original
    delivery.override_data = True
    out = Augments()(x, y)  # outside: the real method runs, the queue is untouched
    assert len(delivery) == 2 and out[3] != delivery.data_queue[0][3]


def test_inherited_method_patch_is_removed_from_the_subclass():
    delivery = MethodOutputsDelivery(1, f"{HERE}.ChildAugments.__call__")
    with delivery:
        ChildAugments()(torch.randn(2, 2), torch.arange(2))
    assert "__call__" not in ChildAugments.__dict__
    assert len(delivery) == 1


def test_method_delivery_restores_when_the_student_raises():
    original = Augments.__dict__["__call__"]
    delivery = MethodOutputsDelivery(1, f"{HERE}.Augments.__call__")
    delivery.override_data = True
    with pytest.raises(DeliveryQueueEmptyError, match=r"Augments.__call__'.*queue is empty"), delivery:
        Augments()(torch.randn(2, 2), torch.arange(2))
    assert Augments.__dict__["__call__"] is original


def test_function_path_is_refused_for_method_delivery():
    delivery = MethodOutputsDelivery(1, "random.random")
    with pytest.raises(TypeError, match=r"MethodOutputsDelivery.*use the Function\* variant"):
        delivery.__enter__()
    assert not delivery.active


def test_delivery_with_queued_data_copies_and_pickles():
    delivery = MethodOutputsDelivery(2, f"{HERE}.Augments.__call__")
    with delivery:
        Augments()(torch.randn(2, 2), torch.arange(2))
    for other in (copy.deepcopy(delivery), pickle.loads(pickle.dumps(delivery))):
        assert len(other) == 1 and not other.active
        torch.testing.assert_close(other.data_queue[0][0], delivery.data_queue[0][0])
        other.override_data = True
        with other:
            assert torch.equal(Augments()(None, None)[0], delivery.data_queue[0][0])


def test_registry_alias_builds_method_delivery():
    assert DELIVERIES.get("MethodOutputs") is MethodOutputsDelivery
    built = DELIVERIES.build(
        {"type": "MethodOutputs", "max_keep_data": 1, "method_path": f"{HERE}.Augments.__call__"}
    )
    assert built.method_path.endswith("Augments.__call__")
