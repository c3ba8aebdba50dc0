"""RecorderManager: built from config dicts, initialized and entered together, lookups and errors."""

import pytest
import torch
from torch import nn

from torchpare.record import (
    FunctionOutputsRecorder,
    ModuleInputsRecorder,
    ModuleOutputsRecorder,
    ParameterRecorder,
    RecorderManager,
)
from torchpare.registry import BuildError, UnknownTypeError


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


CONFIG = {
    "feat": {"type": "ModuleOutputs", "source": "layer1"},
    "fc_in": {"type": "ModuleInputsRecorder", "source": "fc"},
    "logits": {"type": "ModuleOutputs", "source": "fc"},
    "fc_w": {"type": "Parameter", "source": "fc.weight"},
    "relu": {"type": "FunctionOutputs", "source": "torch.nn.functional.relu"},
}


def test_manager_from_plain_config_dicts_records_a_small_cnn():
    model = SmallCNN()
    manager = RecorderManager(CONFIG)
    manager.initialize(model)
    x = torch.randn(2, 1, 8, 8)
    with manager:
        logits = model(x)
    assert [name for name, _ in manager] == list(CONFIG)
    assert isinstance(manager.get_recorder("fc_in"), ModuleInputsRecorder)
    assert isinstance(manager.get_recorder("fc_w"), ParameterRecorder)
    assert manager.get_recorder("feat").get_record_data().shape == (2, 8, 8, 8)
    assert manager.get_recorder("logits").get_record_data() is logits
    torch.testing.assert_close(model.fc(manager.get_recorder("fc_in").get_record_data(data_idx=0)), logits)
    assert manager.get_recorder("fc_w").get_record_data() is model.fc.weight
    assert len(manager.get_recorder("relu").data_buffer) == 2  # nn.ReLU calls F.relu through the module
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_manager_accepts_built_recorders_and_mixes_them_with_configs():
    rec = ModuleOutputsRecorder("stem")
    manager = RecorderManager({"stem": rec, "fc": {"type": "ModuleOutputs", "source": "fc"}})
    manager.initialize(SmallCNN())
    assert manager.get_recorder("stem") is rec
    assert set(manager.recorders) == {"stem", "fc"} and len(manager) == 2 and "fc" in manager


def test_unknown_recorder_name_lists_the_known_ones():
    manager = RecorderManager(CONFIG)
    with pytest.raises(
        KeyError, match=r"no recorder named 'feet'; did you mean 'feat'\?.*Known recorders: 'feat'"
    ):
        manager.get_recorder("feet")


def test_bad_configs_are_reported_with_the_type_or_key():
    with pytest.raises(UnknownTypeError, match=r"no type 'ModuleOutput'.*did you mean"):
        RecorderManager({"a": {"type": "ModuleOutput", "source": "fc"}})
    with pytest.raises(BuildError, match=r"unexpected argument 'sources'.*did you mean 'source'"):
        RecorderManager({"a": {"type": "ModuleOutputs", "sources": "fc"}})
    with pytest.raises(TypeError, match=r"recorder 'a' must be a BaseRecorder or a config dict"):
        RecorderManager({"a": "fc"})


def test_initialize_reports_a_missing_source_by_path():
    manager = RecorderManager({"x": {"type": "ModuleOutputs", "source": "layer2"}})
    with pytest.raises(
        AttributeError, match=r"source='layer2'.*no module 'layer2' in SmallCNN; did you mean .*'layer1'"
    ):
        manager.initialize(SmallCNN())


def test_failure_while_entering_undoes_the_recorders_already_entered():
    model = SmallCNN()
    good = ModuleOutputsRecorder("fc")
    good.initialize(model)
    manager = RecorderManager({"good": good, "bad": ModuleOutputsRecorder("stem")})  # bad: not initialized
    with pytest.raises(ValueError, match=r"source='stem'.*initialize"), manager:
        pass
    assert not good.active and not model.fc._forward_hooks


def test_manager_context_restores_everything_when_the_forward_raises_and_can_nest():
    model = SmallCNN()
    manager = RecorderManager(CONFIG)
    manager.initialize(model)
    with pytest.raises(RuntimeError), manager:
        model(torch.randn(2, 3, 8, 8))  # wrong channel count
    assert not any(m._forward_hooks for m in model.modules())
    with manager, manager:
        model(torch.randn(1, 1, 8, 8))
    assert len(manager.get_recorder("logits").data_buffer) == 1
    assert not any(rec.active for _, rec in manager)
    assert isinstance(manager.get_recorder("relu"), FunctionOutputsRecorder)
