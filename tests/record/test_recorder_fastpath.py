"""The teacher's fast path: records retire one by one, managers record only what is needed, release()."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from torchpare.record import ModuleOutputsRecorder, RecorderManager, RecordIndexError
from torchpare.record.function_outputs import FunctionOutputsRecorder


class TwiceNet(nn.Module):
    """Calls ``lin`` twice; between the calls it snapshots which weakrefs are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.watch: list[weakref.ref] = []
        self.alive_between: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        self.alive_between = [ref() is not None for ref in self.watch]
        return self.lin(y)


def test_each_new_record_releases_the_oldest_record_of_the_previous_context() -> None:
    model = TwiceNet()
    recorder = ModuleOutputsRecorder("lin")
    recorder.initialize(model)
    with torch.no_grad(), recorder:
        model(torch.randn(2, 4))
    model.watch = [weakref.ref(t) for t in recorder.data_buffer]
    assert len(model.watch) == 2
    with torch.no_grad(), recorder:
        model(torch.randn(2, 4))
    # After the first new record, old record 0 is gone and old record 1 is still held.
    assert model.alive_between == [False, True]
    assert [ref() is not None for ref in model.watch] == [False, False]
    assert len(recorder.data_buffer) == 2


def test_records_stay_readable_until_the_next_enter_and_held_lists_stay_untouched() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    recorder = ModuleOutputsRecorder("0")
    recorder.initialize(model)
    x1, x2 = torch.randn(1, 3), torch.randn(1, 3)
    with torch.no_grad(), recorder:
        first = model(x1)
    held = recorder.data_buffer
    assert torch.equal(recorder.get_record_data(), first)
    with torch.no_grad(), recorder:
        second = model(x2)
    assert len(held) == 1 and torch.equal(held[0], first)  # the caller's list keeps its record
    assert torch.equal(recorder.get_record_data(), second)


def test_a_context_with_fewer_calls_drops_the_unreplaced_old_records_on_exit() -> None:
    model = TwiceNet()
    recorder = ModuleOutputsRecorder("lin")
    recorder.initialize(model)
    with recorder:
        model(torch.randn(1, 4))
    refs = [weakref.ref(t) for t in recorder.data_buffer]
    with recorder:
        pass  # no forward: nothing replaces the old records
    assert all(ref() is None for ref in refs)
    assert recorder.data_buffer == []


def test_release_drops_records_and_later_reads_explain_why() -> None:
    model = nn.Linear(2, 2)
    manager = RecorderManager({"out": ModuleOutputsRecorder("")})
    manager.initialize(model)
    with manager:
        model(torch.ones(1, 2))
    ref = weakref.ref(manager.get_recorder("out").data_buffer[0])
    manager.release()
    assert ref() is None
    with pytest.raises(RecordIndexError, match="no records"):
        manager.get_recorder("out").get_record_data()


def test_release_inside_the_context_keeps_recording_later_calls() -> None:
    model = nn.Linear(2, 2)
    recorder = ModuleOutputsRecorder("")
    recorder.initialize(model)
    with recorder:
        model(torch.ones(1, 2))
        recorder.release()
        out = model(torch.zeros(1, 2))
    assert len(recorder.data_buffer) == 1 and torch.equal(recorder.get_record_data(), out)


def test_function_recorders_retire_old_records_too() -> None:
    recorder = FunctionOutputsRecorder("torch.nn.functional.relu")
    with recorder:
        torch.nn.functional.relu(torch.ones(2))
    ref = weakref.ref(recorder.data_buffer[0])
    with recorder:
        out = torch.nn.functional.relu(-torch.ones(2))
        assert ref() is None
    assert torch.equal(recorder.get_record_data(), out)


def test_set_needed_hooks_only_the_needed_recorders() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    manager = RecorderManager({name: ModuleOutputsRecorder(name) for name in ("0", "1", "2")})
    manager.initialize(model)
    with manager:
        model(torch.ones(1, 2))
    manager.set_needed(["2"])
    assert manager.needed == frozenset({"2"})
    with manager:
        assert model[0]._forward_hooks == {} and len(model[2]._forward_hooks) == 1
        out = model(torch.ones(1, 2))
    assert torch.equal(manager.get_recorder("2").get_record_data(), out)
    with pytest.raises(RecordIndexError, match=r"set_needed\(\) left '0' out"):
        manager.get_recorder("0").get_record_data()
    manager.set_needed(None)
    assert manager.needed == frozenset({"0", "1", "2"})
    with manager:
        model(torch.ones(1, 2))
    assert len(manager.get_recorder("0").data_buffer) == 1


def test_set_needed_refuses_unknown_names_and_calls_inside_the_context() -> None:
    manager = RecorderManager({"feat": ModuleOutputsRecorder("")})
    manager.initialize(nn.Linear(2, 2))
    with pytest.raises(KeyError, match="did you mean 'feat'"):
        manager.set_needed(["feet"])
    with manager, pytest.raises(ValueError, match="before"):
        manager.set_needed(["feat"])


def test_manager_removes_every_hook_when_the_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1))  # second layer fails: 3 != 4
    manager = RecorderManager({"0": ModuleOutputsRecorder("0"), "1": ModuleOutputsRecorder("1")})
    manager.initialize(model)
    with pytest.raises(RuntimeError), manager:
        model(torch.ones(1, 2))
    assert all(not m._forward_hooks for m in model.modules())
    assert not manager.get_recorder("0").active
