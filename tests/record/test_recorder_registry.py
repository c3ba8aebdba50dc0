"""Every public recorder and delivery is registered under its class name and its short alias."""

import pytest

import torchpare.deliver as deliver
import torchpare.record as record
from torchpare.registry import DELIVERIES, RECORDERS

RECORDER_ALIASES = {
    "ModuleOutputsRecorder": "ModuleOutputs",
    "ModuleInputsRecorder": "ModuleInputs",
    "FunctionOutputsRecorder": "FunctionOutputs",
    "FunctionInputsRecorder": "FunctionInputs",
    "MethodOutputsRecorder": "MethodOutputs",
    "MethodInputsRecorder": "MethodInputs",
    "ParameterRecorder": "Parameter",
}
DELIVERY_ALIASES = {"FunctionOutputsDelivery": "FunctionOutputs", "MethodOutputsDelivery": "MethodOutputs"}


@pytest.mark.parametrize(("name", "alias"), sorted(RECORDER_ALIASES.items()))
def test_recorder_is_registered_by_class_name_and_alias(name, alias):
    cls = getattr(record, name)
    assert name in record.__all__
    assert RECORDERS.get(name) is cls is RECORDERS.get(alias)
    assert issubclass(cls, record.BaseRecorder)


@pytest.mark.parametrize(("name", "alias"), sorted(DELIVERY_ALIASES.items()))
def test_delivery_is_registered_by_class_name_and_alias(name, alias):
    cls = getattr(deliver, name)
    assert name in deliver.__all__
    assert DELIVERIES.get(name) is cls is DELIVERIES.get(alias)


def test_registries_hold_every_public_type():
    assert set(RECORDER_ALIASES) <= set(RECORDERS.names())
    assert set(DELIVERY_ALIASES) <= set(DELIVERIES.names())


def test_unknown_recorder_type_suggests_the_alias():
    with pytest.raises(KeyError, match=r"no type 'ModuleOutput'.*did you mean 'ModuleOutputs'"):
        RECORDERS.get("ModuleOutput")
