"""Nothing is left behind: many enter/exit cycles, deepcopy and pickle of models with recorders."""

import copy
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from torchpare._patch import active_patch_count
from torchpare.record import (
    FunctionInputsRecorder,
    MethodOutputsRecorder,
    ModuleInputsRecorder,
    ModuleOutputsRecorder,
    ParameterRecorder,
    RecorderManager,
)

ORIGINAL_RELU = F.relu
ORIGINAL_LINEAR_FORWARD = nn.Linear.__dict__["forward"]


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def _manager(model):
    manager = RecorderManager(
        {
            "out": ModuleOutputsRecorder("fc1"),
            "in": ModuleInputsRecorder("fc2"),
            "w": ParameterRecorder("fc2.weight"),
            "relu": FunctionInputsRecorder("torch.nn.functional.relu"),
            "linear": MethodOutputsRecorder("torch.nn.Linear.forward"),
        }
    )
    manager.initialize(model)
    return manager


def _assert_clean(model):
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert F.relu is ORIGINAL_RELU
    assert nn.Linear.__dict__["forward"] is ORIGINAL_LINEAR_FORWARD
    assert active_patch_count() == 0


def test_thousand_enter_exit_cycles_leave_no_hook_or_patch():
    model = Model()
    manager = _manager(model)
    x = torch.randn(1, 4)
    for i in range(1000):
        with manager:
            if i % 100 == 0:
                model(x)
    _assert_clean(model)
    assert len(manager.get_recorder("linear").data_buffer) == 0  # last cycle ran no forward


def test_model_with_initialized_recorders_deepcopies_and_pickles():
    model = Model()
    manager = _manager(model)
    x = torch.randn(3, 4)
    with manager:
        model(x)
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for other in (clone, restored):
        torch.testing.assert_close(other(x), model(x))
        _assert_clean(other)


def test_recorders_and_managers_can_be_copied_and_keep_working():
    model = Model()
    manager = _manager(model)
    x = torch.randn(2, 4)
    with manager:
        model(x)
    copied_model, copied_manager = copy.deepcopy((model, manager))  # one memo: recorders follow the copy
    with copied_manager:
        copied_model(x)
    assert copied_manager.get_recorder("w").get_record_data() is copied_model.fc2.weight
    assert len(copied_manager.get_recorder("linear").data_buffer) == 2
    assert len(copied_manager.get_recorder("relu").data_buffer) == 1
    pickled = pickle.loads(pickle.dumps(manager))
    assert [name for name, _ in pickled] == ["out", "in", "w", "relu", "linear"]
    _assert_clean(model)


def test_forward_that_raises_inside_the_context_leaves_nothing_behind():
    model = Model()
    manager = _manager(model)
    for _ in range(3):
        try:
            with manager:
                model(torch.randn(1, 5))
        except RuntimeError:
            pass
    _assert_clean(model)
