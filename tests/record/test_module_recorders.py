"""ModuleOutputsRecorder / ModuleInputsRecorder: records per call, indexing, errors, hook lifetime."""

import pytest
import torch
from torch import nn

from torchpare.record import (
    ModuleInputsRecorder,
    ModuleOutputsRecorder,
    RecorderNotInitializedError,
    RecordIndexError,
)


class TwiceConv(nn.Module):
    """``conv1`` is applied twice per forward (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))

    def forward(self, x):
        return self.head(self.conv1(torch.relu(self.conv1(x))))


class TupleOut(nn.Module):
    def forward(self, x):
        return x + 1, x * 2


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(4, 4)
        self.layer3 = nn.Linear(4, 4)
        self.pair = TupleOut()

    def forward(self, x):
        return self.pair(self.layer3(self.layer1(x)))


def test_module_called_twice_gives_two_distinct_records_in_call_order():
    model = TwiceConv()
    x = torch.randn(2, 3, 4, 4)
    recorder = ModuleOutputsRecorder("conv1")
    recorder.initialize(model)
    with recorder:
        model(x)
    assert len(recorder.data_buffer) == 2
    first, second = recorder.get_record_data(0), recorder.get_record_data(record_idx=1)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(first, model.conv1(x))
    torch.testing.assert_close(second, model.conv1(torch.relu(first)))
    assert recorder.get_record_data(-1) is second


def test_inputs_recorder_records_the_positional_input_tuple_per_call():
    model = TwiceConv()
    x = torch.randn(2, 3, 4, 4)
    recorder = ModuleInputsRecorder("conv1")
    recorder.initialize(model)
    with recorder:
        model(x)
    assert len(recorder.data_buffer) == 2
    assert isinstance(recorder.get_record_data(0), tuple)
    assert recorder.get_record_data(0, data_idx=0) is x
    torch.testing.assert_close(recorder.get_record_data(1, 0), torch.relu(model.conv1(x)))


def test_data_idx_selects_from_tuple_outputs_and_checks_range():
    model = Net()
    recorder = ModuleOutputsRecorder("pair")
    recorder.initialize(model)
    x = torch.randn(3, 4)
    with recorder:
        a, b = model(x)
    assert recorder.get_record_data(data_idx=1) is b
    with pytest.raises(RecordIndexError, match=r"data_idx=2 is out of range.*2 item"):
        recorder.get_record_data(data_idx=2)


def test_data_idx_on_a_tensor_record_is_a_type_error():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    with recorder:
        model(torch.randn(1, 4))
    with pytest.raises(TypeError, match=r"source='layer1'.*needs a tuple or list record.*Tensor"):
        recorder.get_record_data(data_idx=0)


def test_entering_clears_the_buffer_and_records_only_inside_the_context():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    x = torch.randn(1, 4)
    with recorder:
        model(x)
        model(x)
    old = recorder.data_buffer
    assert len(old) == 2
    model(x)  # outside: not recorded
    assert len(recorder.data_buffer) == 2
    with recorder:
        model(x)
    assert len(recorder.data_buffer) == 1
    assert len(old) == 2  # a buffer handed out earlier is not mutated


def test_out_of_range_record_idx_says_how_many_records_exist():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    with recorder:
        model(torch.randn(1, 4))
    with pytest.raises(RecordIndexError, match=r"record_idx=1 is out of range; 1 record\(s\) exist"):
        recorder.get_record_data(1)


def test_no_records_suggests_running_the_forward_inside_the_context():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    with pytest.raises(RecordIndexError, match=r"no records.*inside `with recorder:`"):
        recorder.get_record_data()
    with recorder:
        pass
    with pytest.raises(IndexError, match=r"no records.*not called inside"):
        recorder.get_record_data()


def test_missing_module_names_the_path_and_the_closest_names():
    recorder = ModuleOutputsRecorder("layr3")
    with pytest.raises(
        AttributeError, match=r"ModuleOutputsRecorder\(source='layr3'\).*did you mean 'layer3'"
    ):
        recorder.initialize(Net())


def test_module_recorder_without_model_or_initialize_raises_clear_errors():
    recorder = ModuleInputsRecorder("layer1")
    with pytest.raises(TypeError, match=r"ModuleInputsRecorder\(source='layer1'\).*needs the nn.Module"):
        recorder.initialize(None)
    with pytest.raises(RecorderNotInitializedError, match=r"initialize\(model\) before `with recorder:`"):
        recorder.__enter__()
    assert not recorder.active


def test_empty_source_records_the_whole_model():
    model = Net()
    recorder = ModuleOutputsRecorder("")
    recorder.initialize(model)
    with recorder:
        out = model(torch.randn(2, 4))
    assert recorder.get_record_data() is out


def test_hooks_exist_only_inside_the_context_also_when_forward_raises():
    model = Net()
    outputs, inputs = ModuleOutputsRecorder("layer3"), ModuleInputsRecorder("layer3")
    outputs.initialize(model)
    inputs.initialize(model)
    with outputs, inputs:
        assert len(model.layer3._forward_hooks) == 1 and len(model.layer3._forward_pre_hooks) == 1
    assert not model.layer3._forward_hooks and not model.layer3._forward_pre_hooks
    with pytest.raises(RuntimeError, match="shape"), outputs, inputs:
        model(torch.randn(2, 5))  # wrong width: layer1 raises
    assert not model.layer3._forward_hooks and not model.layer3._forward_pre_hooks


def test_records_keep_the_graph_so_gradients_flow_to_the_model():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    with recorder:
        model(torch.randn(2, 4))
    recorder.get_record_data().sum().backward()
    assert model.layer1.weight.grad is not None and model.layer3.weight.grad is None


def test_module_replaced_after_initialize_is_found_on_enter():
    model = Net()
    recorder = ModuleOutputsRecorder("layer3")
    recorder.initialize(model)
    model.layer3 = nn.Linear(4, 4)
    with recorder:
        model(torch.randn(1, 4))
    assert len(recorder.data_buffer) == 1


def test_nested_enter_of_the_same_recorder_hooks_once():
    model = Net()
    recorder = ModuleOutputsRecorder("layer1")
    recorder.initialize(model)
    with recorder:
        with recorder:
            model(torch.randn(1, 4))
        assert recorder.active
        model(torch.randn(1, 4))
    assert not recorder.active and not model.layer1._forward_hooks
    assert len(recorder.data_buffer) == 2


def test_recorders_build_by_class_name_and_alias():
    from torchpare.registry import RECORDERS

    assert RECORDERS.get("ModuleOutputs") is ModuleOutputsRecorder is RECORDERS.get("ModuleOutputsRecorder")
    assert RECORDERS.get("ModuleInputs") is ModuleInputsRecorder
    built = RECORDERS.build({"type": "ModuleOutputs", "source": "fc"})
    assert isinstance(built, ModuleOutputsRecorder) and built.source == "fc"


def test_non_string_source_is_a_type_error():
    with pytest.raises(TypeError, match="source must be a str"):
        ModuleOutputsRecorder(3)


class DictOut(nn.Module):
    def forward(self, x):
        return {"logits": x * 3, "hidden": x}


def test_str_data_idx_selects_a_key_of_a_dict_record_and_lists_keys_when_missing():
    model = DictOut()
    recorder = ModuleOutputsRecorder("")
    recorder.initialize(model)
    x = torch.randn(2, 3)
    with recorder:
        out = model(x)
    assert recorder.get_record_data(data_idx="logits") is out["logits"]
    with pytest.raises(
        RecordIndexError, match=r"no key 'logit'; did you mean 'logits'\?; keys: \['logits', 'hidden'\]"
    ):
        recorder.get_record_data(data_idx="logit")
    with pytest.raises(TypeError, match="needs a tuple or list record"):
        recorder.get_record_data(data_idx=0)
