"""DeliveryManager: config dicts, override_data for all, context for all, lookups and errors."""

import random

import pytest

from torchpare._patch import active_patch_count
from torchpare.deliver import DeliveryManager, FunctionOutputsDelivery, MethodOutputsDelivery
from torchpare.registry import UnknownTypeError

HERE = __name__


def draw():
    return random.random()


class Sampler:
    def sample(self, n):
        return [random.randint(0, 100) for _ in range(n)]


def _manager():
    return DeliveryManager(
        {
            "draw": {"type": "FunctionOutputs", "max_keep_data": 2, "func_path": f"{HERE}.draw"},
            "sampler": MethodOutputsDelivery(1, f"{HERE}.Sampler.sample"),
        }
    )


def test_override_data_switches_all_deliveries_and_student_replays_everything():
    manager = _manager()
    with manager:
        manager.override_data = False
        teacher = (draw(), draw(), Sampler().sample(5))
        manager.override_data = True
        assert all(d.override_data for _, d in manager)
        student = (draw(), draw(), Sampler().sample(5))
    assert student == teacher
    assert manager.override_data is True
    assert active_patch_count() == 0


def test_override_getter_reports_disagreeing_deliveries():
    manager = _manager()
    manager.get_delivery("draw").override_data = True
    with pytest.raises(ValueError, match=r"disagree on override_data.*'draw': True"):
        _ = manager.override_data
    with pytest.raises(TypeError, match="override_data must be True or False"):
        manager.override_data = "yes"


def test_manager_restores_every_patch_when_the_body_raises():
    manager = _manager()
    original_draw, original_sample = draw, Sampler.__dict__["sample"]
    with pytest.raises(RuntimeError), manager:
        draw()
        raise RuntimeError("step failed")
    assert globals()["draw"] is original_draw and Sampler.__dict__["sample"] is original_sample
    manager.clear()
    assert all(len(d) == 0 for _, d in manager)


def test_a_failing_entry_undoes_the_deliveries_already_entered():
    manager = DeliveryManager(
        {"ok": FunctionOutputsDelivery(1, f"{HERE}.draw"), "bad": FunctionOutputsDelivery(1, f"{HERE}.nope")}
    )
    with pytest.raises(AttributeError, match="'nope'"), manager:
        pass
    assert not manager.get_delivery("ok").active and active_patch_count() == 0


def test_unknown_delivery_name_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"no delivery named 'drow'; did you mean 'draw'\?.*'draw', 'sampler'"):
        _manager().get_delivery("drow")


def test_bad_configs_are_reported():
    with pytest.raises(UnknownTypeError, match=r"no type 'FunctionOutput'"):
        DeliveryManager({"a": {"type": "FunctionOutput", "max_keep_data": 1, "func_path": f"{HERE}.draw"}})
    with pytest.raises(TypeError, match=r"delivery 'a' must be a BaseDelivery or a config dict"):
        DeliveryManager({"a": 3})


def test_manager_iterates_names_and_deliveries_and_nests():
    manager = _manager()
    assert [name for name, _ in manager] == ["draw", "sampler"] and len(manager) == 2 and "draw" in manager
    with manager, manager:
        draw()
    assert len(manager.get_delivery("draw")) == 1 and active_patch_count() == 0
    assert set(manager.deliveries) == {"draw", "sampler"}
