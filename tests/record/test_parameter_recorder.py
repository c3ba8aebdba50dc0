"""ParameterRecorder: the live parameter, gradients through it, lookups and errors."""

import pytest
import torch
from torch import nn

from torchpare.record import ParameterRecorder


def _model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))


def test_parameter_record_is_the_live_parameter_and_gradients_reach_it():
    model = _model()
    recorder = ParameterRecorder("3.weight")
    recorder.initialize(model)
    with recorder:
        weight = recorder.get_record_data()
    assert weight is model[3].weight
    (weight**2).sum().backward()
    torch.testing.assert_close(model[3].weight.grad, 2 * model[3].weight.detach())


def test_parameter_replaced_after_initialize_is_the_one_returned():
    model = _model()
    recorder = ParameterRecorder("3.bias")
    recorder.initialize(model)
    model[3].bias = nn.Parameter(torch.zeros(3))
    with recorder:
        assert recorder.get_record_data() is model[3].bias
    assert len(recorder.data_buffer) == 1


def test_buffers_can_be_recorded_too():
    model = _model()
    recorder = ParameterRecorder("1.running_mean")
    recorder.initialize(model)
    with recorder:
        assert recorder.get_record_data() is model[1].running_mean


def test_missing_parameter_names_the_closest_parameters():
    with pytest.raises(
        AttributeError, match=r"ParameterRecorder\(source='3.weigth'\).*did you mean '3.weight'"
    ):
        ParameterRecorder("3.weigth").initialize(_model())


def test_parameter_recorder_needs_a_module():
    with pytest.raises(TypeError, match=r"ParameterRecorder\(source='w'\).*needs the nn.Module"):
        ParameterRecorder("w").initialize(None)


def test_parameter_alias_builds_the_recorder():
    from torchpare.registry import RECORDERS

    assert RECORDERS.get("Parameter") is ParameterRecorder is RECORDERS.get("ParameterRecorder")
