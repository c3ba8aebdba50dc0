"""Per-loss schedules: weight warm-up (DKD's), step decay, stop and detach points, through the distiller and Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.distill.loss_schedule import LossScheduleError
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.zoo import DigitsCNN, DigitsMLP


def _distiller(schedules=None, loss=None, extra=None) -> dict:
    mapping = {"preds_S": {"from_student": True, "recorder": "logits"},
               "preds_T": {"from_student": False, "recorder": "logits"}, **(extra or {})}
    cfg = {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kd": loss or {"type": "KLDivergence", "tau": 4}},
        "loss_forward_mappings": {"kd": mapping},
    }
    if schedules is not None:
        cfg["loss_schedules"] = schedules
    return cfg


def _losses_over_steps(schedules, steps, loss=None, extra=None, data=None):
    torch.manual_seed(0)
    student, teacher = DigitsMLP(), DigitsCNN(width=4)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 10
    plain = SingleTeacherDistill(student, teacher, _distiller(None, loss, extra))
    sched = SingleTeacherDistill(student, teacher, _distiller(schedules, loss, extra))
    plain.train(), sched.train()
    base = plain.loss(x, y)["distill.loss_kd"].detach()
    return base, [sched.loss(x, y).get("distill.loss_kd") for _ in range(steps)]


def test_dkd_linear_warmup_over_epochs_scales_the_loss_from_zero():
    dkd = {"type": "DKDLoss", "alpha": 1.0, "beta": 8.0, "tau": 4.0}
    schedules = {"steps_per_epoch": 2, "kd": {"weight": {"type": "linear", "warmup_epochs": 2}}}
    base, got = _losses_over_steps(schedules, 6, dkd, {"gt_labels": {"from_data": "targets"}})
    factors = [float(v.detach() / base) for v in got]
    assert factors == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0], abs=1e-6)


def test_cosine_warmup_and_step_decay_follow_their_formulas():
    base, got = _losses_over_steps({"kd": {"weight": {"type": "cosine", "warmup_steps": 4, "start": 0.2}}}, 5)
    assert [float(v.detach() / base) for v in got] == pytest.approx([0.2, 0.3171573, 0.6, 0.8828427, 1.0], abs=1e-5)
    base, got = _losses_over_steps({"kd": {"weight": {"type": "step", "milestones": [2, 4], "gamma": 0.5,
                                                      "by": "step"}}}, 5)
    assert [float(v.detach() / base) for v in got] == pytest.approx([1, 1, 0.5, 0.5, 0.25], abs=1e-6)


def test_stopped_loss_is_neither_computed_nor_returned():
    calls = []
    base, got = _losses_over_steps({"kd": {"stop_step": 2}}, 4)
    assert [v is None for v in got] == [False, False, True, True]
    d = ConfigurableDistiller(**_distiller({"kd": {"stop_step": 0}}))
    d.distill_losses["kd"].register_forward_hook(lambda *a: calls.append(1))
    assert d.compute_distill_losses() == {} and calls == []


def test_detached_loss_is_still_reported_but_trains_nothing():
    base, got = _losses_over_steps({"kd": {"detach_step": 1}}, 2)
    assert got[0].requires_grad and not got[1].requires_grad
    torch.testing.assert_close(got[1], base)


def test_counter_advances_only_in_training_mode_and_is_saved_with_the_distiller():
    d = ConfigurableDistiller(**_distiller({"kd": {"stop_step": 3}}))
    d.eval()
    d.loss_schedules.apply({})
    assert int(d.state_dict()["loss_schedules.step"]) == 0
    d.train()
    d.loss_schedules.apply({})
    assert int(d.state_dict()["loss_schedules.step"]) == 1
    assert "loss_schedules.step" not in ConfigurableDistiller(**_distiller()).state_dict()


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ({"kdd": {"stop_step": 1}}, r"loss_schedules names loss 'kdd'.*did you mean 'kd'"),
        ({"kd": {"stop_stepp": 1}}, r"unknown key 'stop_stepp'"),
        ({"kd": {"weight": {"type": "linar", "warmup_steps": 1}}}, r"unknown schedule 'linar'"),
        ({"kd": {"weight": {"type": "linear"}}}, r"needs exactly one of warmup_epochs, warmup_steps"),
        ({"kd": {"stop_step": 1, "stop_epoch": 1}}, r"stop_epoch or stop_step, not both"),
        ({"kd": {"detach_step": -1}}, r"detach_step: must be an integer >= 0"),
    ],
)
def test_bad_schedules_are_refused_when_the_distiller_is_built(schedules, message):
    with pytest.raises(LossScheduleError, match=message):
        ConfigurableDistiller(**_distiller(schedules))
    assert issubclass(LossScheduleError, ValueError)


def test_epoch_settings_without_steps_per_epoch_say_how_to_give_it():
    d = ConfigurableDistiller(**_distiller({"kd": {"stop_epoch": 1}}))
    with pytest.raises(LossScheduleError, match="set_steps_per_epoch"):
        d.loss_schedules.apply({"loss_kd": torch.tensor(1.0)})


def test_trainer_stops_the_distill_loss_at_the_configured_epoch(tmp_path):
    torch.manual_seed(0)
    algo = SingleTeacherDistill(DigitsMLP(), DigitsCNN(width=4), _distiller({"kd": {"stop_epoch": 1}}))
    data = TensorDataset(torch.rand(16, 1, 8, 8), torch.arange(16) % 10)
    Trainer(algo, data, config=TrainConfig(epochs=2, batch_size=8, quiet=True), run_dir=tmp_path).fit()
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    assert [("distill.loss_kd" in r) for r in steps] == [True, True, False, False]


def test_loss_schedule_from_yaml_through_the_cli(tmp_path):
    from pathlib import Path

    from torchpare.cli.main import main

    teacher = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=4).state_dict(), teacher)
    out = tmp_path / "run"
    configs = Path(__file__).resolve().parents[2] / "configs"
    rc = main(["distill", str(configs / "digits_kd.yaml"), "--output", str(out), "--quiet",
               "--set", f"teacher.checkpoint={teacher}", "--set", "teacher.width=4", "--set", "schedule.epochs=2",
               "--set", "algorithm.distiller.loss_schedules={kd: {weight: {type: linear, warmup_epochs: 1}, "
                        "stop_epoch: 1}}"])
    assert rc == 0
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    per_epoch = len(steps) // 2
    assert steps[0]["distill.loss_kd"] == 0.0  # warm-up from 0
    assert all("distill.loss_kd" in r for r in steps[:per_epoch])
    assert not any("distill.loss_kd" in r for r in steps[per_epoch:])
