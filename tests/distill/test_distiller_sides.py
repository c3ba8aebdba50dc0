"""The distiller's per-side context, deliveries per step, nested data_idx paths, MMRazor names."""

from __future__ import annotations

import inspect
import random
from pathlib import Path

import pytest
import torch
from torch import nn

import torchpare.distill.algorithms as algorithms_pkg
from torchpare.deliver import DeliveryManager, DeliveryQueueLeftoverError, DistillDeliveryManager
from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.distiller import ConfigurableDistiller, DistillerConfigError
from torchpare.record import RecordIndexError


class Noisy(nn.Module):
    """A model whose forward draws ``random.random()`` ``draws`` times (the delivered call)."""

    def __init__(self, draws: int = 1, fail: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.draws, self.fail = draws, fail
        self.seen: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 0.0
        for _ in range(self.draws):
            scale += random.random()
        self.seen.append(scale)
        if self.fail:
            raise RuntimeError("student failed")
        return self.fc(x) * scale


def _kd(**extra) -> dict:
    return {
        "student_recorders": {"out": {"type": "ModuleOutputs", "source": "fc"}},
        "teacher_recorders": {"out": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"mse": {"type": "MSELoss"}},
        "loss_forward_mappings": {"mse": {"s_feature": {"from_student": True, "recorder": "out"},
                                          "t_feature": {"from_student": False, "recorder": "out"}}},
        **extra,
    }


def _draw(max_keep_data: int = 1) -> dict:
    return {"draw": {"type": "FunctionOutputs", "max_keep_data": max_keep_data, "func_path": "random.random"}}


def test_a_failed_step_does_not_break_the_next_one() -> None:
    student, teacher = Noisy(fail=True), Noisy()
    algo = SingleTeacherDistill(student, teacher, _kd(distill_deliveries=_draw()))
    x = torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="student failed"):
        algo.loss(x)
    student.fail = False
    losses = algo.loss(x)  # DeliveryQueueFullError before: the failed step's output was still queued
    assert set(losses) == {"distill.loss_mse"}
    assert student.seen[-1] == teacher.seen[-1]


def test_outputs_left_after_the_students_forward_are_an_error_naming_the_delivery() -> None:
    student, teacher = Noisy(draws=1), Noisy(draws=2)
    algo = SingleTeacherDistill(student, teacher, _kd(distill_deliveries=_draw(max_keep_data=2)))
    with pytest.raises(DeliveryQueueLeftoverError, match=r"delivery 'draw' \(random\.random: 1 output"):
        algo.loss(torch.randn(2, 4))
    teacher.draws = 1
    algo.loss(torch.randn(2, 4))  # the leftover did not leak into this step
    assert student.seen[-1] == teacher.seen[-1]


def test_every_step_starts_with_empty_queues_even_after_a_hand_written_teacher_pass() -> None:
    student, teacher = Noisy(), Noisy()
    algo = SingleTeacherDistill(student, teacher, _kd(distill_deliveries=_draw(max_keep_data=3)))
    with algo.distiller.recording("teacher"):
        teacher(torch.randn(1, 4))  # a stray teacher pass that no student consumes
    algo.loss(torch.randn(2, 4))
    assert student.seen[-1] == teacher.seen[-1]  # before: the student replayed the stray pass's value


def test_recording_contexts_drive_a_hand_written_step() -> None:
    student, teacher = Noisy(), Noisy()
    d = ConfigurableDistiller(**_kd(distill_deliveries=_draw()))
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    x = torch.randn(2, 4)
    with d.recording("teacher"), torch.no_grad():
        teacher(x)
    with d.recording("student"):
        student(x)
    assert student.seen == teacher.seen
    assert set(d.compute_distill_losses()) == {"loss_mse"}
    with pytest.raises(ValueError, match="side must be 'teacher' or 'student'"), d.recording("peer"):
        pass


def test_algorithms_use_only_recording_and_compute_distill_losses() -> None:
    internals = ("student_recorders", "teacher_recorders", ".deliveries", "set_deliveries_override")
    root = Path(inspect.getfile(algorithms_pkg)).parent
    for path in root.glob("*.py"):
        if path.name == "ofd.py":  # OFDDistiller is a distiller subclass, not an algorithm
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if ">>>" not in line and "..." not in line)
        for name in internals:
            assert f"distiller{name}" not in code and f"d{name}" not in code, (path.name, name)


def test_distill_delivery_manager_is_the_same_class_and_takes_the_list_form() -> None:
    assert DistillDeliveryManager is DeliveryManager
    manager = DistillDeliveryManager([
        {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.random"},
        {"name": "perm", "type": "FunctionOutputs", "max_keep_data": 1, "func_path": "torch.randperm"},
    ])
    assert [name for name, _ in manager] == ["0", "perm"]
    with manager:
        manager.override_data = False
        t = (random.random(), torch.randperm(5))
        manager.override_data = True
        s = (random.random(), torch.randperm(5))
    assert t[0] == s[0] and torch.equal(t[1], s[1])
    d = ConfigurableDistiller(**_kd(distill_deliveries=[
        {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.random"}]))
    assert d.has_deliveries


def test_a_delivery_path_typo_fails_when_the_distiller_is_built() -> None:
    bad = {"draw": {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.randm"}}
    with pytest.raises(ValueError, match=r"random\.randm.*did you mean 'random'") as exc:
        ConfigurableDistiller(**_kd(distill_deliveries=bad))
    assert exc.value.problems[0][0] == "distill_deliveries.draw.func_path"


class HFLike(nn.Module):
    """Returns a dict like a Hugging Face ModelOutput with hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

    def forward(self, x: torch.Tensor) -> dict:
        hidden = [x]
        for layer in self.layers:
            hidden.append(layer(hidden[-1]))
        return {"logits": hidden[-1], "hidden_states": tuple(hidden)}


@pytest.mark.parametrize("data_idx", ["hidden_states.2", ("hidden_states", 2), ["hidden_states", -2]])
def test_data_idx_reads_nested_outputs(data_idx) -> None:
    cfg = {
        "student_recorders": {"out": {"type": "ModuleOutputs", "source": ""}},
        "teacher_recorders": {"out": {"type": "ModuleOutputs", "source": ""}},
        "distill_losses": {"mse": {"type": "MSELoss"}},
        "loss_forward_mappings": {"mse": {
            "s_feature": {"from_student": True, "recorder": "out", "data_idx": data_idx},
            "t_feature": {"from_student": False, "recorder": "out", "data_idx": data_idx}}},
    }
    student, teacher = HFLike(), HFLike()
    algo = SingleTeacherDistill(student, teacher, cfg, calculate_student_loss=False)
    x = torch.randn(2, 4)
    loss = algo.loss(x)["distill.loss_mse"]  # a bare KeyError 'hidden_states.2' before
    with torch.no_grad():
        expected = nn.functional.mse_loss(student(x)["hidden_states"][2], teacher(x)["hidden_states"][2])
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("data_idx", ["hidden_states..2", ("hidden_states", 1.5), [], True])
def test_malformed_data_idx_fails_when_the_distiller_is_built(data_idx) -> None:
    cfg = _kd()
    cfg["loss_forward_mappings"]["mse"]["s_feature"]["data_idx"] = data_idx
    with pytest.raises(DistillerConfigError, match="'data_idx'") as exc:
        ConfigurableDistiller(**cfg)
    assert exc.value.problems[0][0] == "loss_forward_mappings.mse.s_feature"


def test_a_missing_nested_key_names_the_path_and_the_keys() -> None:
    model = HFLike()
    from torchpare.record import ModuleOutputsRecorder

    rec = ModuleOutputsRecorder("")
    rec.initialize(model)
    with rec:
        model(torch.randn(1, 4))
    with pytest.raises(RecordIndexError, match=r"no key 'hidden'.*keys: \['logits', 'hidden_states'\]"):
        rec.get_record_data(data_idx="hidden.2")
    with pytest.raises(RecordIndexError, match=r"after \('hidden_states',\): .*data_idx=7 is out of range"):
        rec.get_record_data(data_idx="hidden_states.7")


def test_mmrazor_loss_names_starting_with_loss_are_not_prefixed_twice() -> None:
    cfg = _kd()
    cfg["distill_losses"] = {"loss_mse": cfg["distill_losses"].pop("mse")}
    cfg["loss_forward_mappings"] = {"loss_mse": cfg["loss_forward_mappings"].pop("mse")}
    algo = SingleTeacherDistill(Noisy(), Noisy(), cfg, calculate_student_loss=False)
    assert set(algo.loss(torch.randn(2, 4))) == {"distill.loss_mse"}  # distill.loss_loss_mse before


def test_every_problem_of_a_distiller_config_is_reported_with_its_key_path() -> None:
    cfg = _kd()
    cfg["distill_losses"]["kd"] = {"type": "KLDivergenz"}
    cfg["connectors"] = {"proj": {"type": "ConvModuleConnector", "in_channel": 3, "out_chanel": 4}}
    cfg["loss_forward_mappings"]["mse"]["t_feature"]["recorder"] = "outt"
    cfg["distill_deliveries"] = {"draw": {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.x"}}
    with pytest.raises(DistillerConfigError) as exc:
        ConfigurableDistiller(**cfg)
    paths = [path for path, _ in exc.value.problems]
    assert paths == ["connectors.proj", "distill_losses.kd.type", "distill_deliveries.draw.func_path",
                     "loss_forward_mappings.mse.t_feature"]
    assert "4 problems" in str(exc.value) and "distill_losses.kd.type: Registry 'losses' has no type" in str(exc.value)


def test_config_errors_checks_recorder_sources_against_the_models() -> None:
    cfg = _kd()
    cfg["student_recorders"]["out"]["source"] = "fcc"
    problems = ConfigurableDistiller.config_errors(cfg, student=Noisy(), teacher=Noisy())
    assert [p for p, _ in problems] == ["student_recorders.out.source"]
    assert "did you mean 'fc'" in problems[0][1]
