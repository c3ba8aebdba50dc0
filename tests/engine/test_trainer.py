"""Trainer: objectives, AMP, clipping, step limits, data order, metrics."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from torchpare.demo.digits import kd_distiller
from torchpare.engine.metrics import read_metrics
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, epoch_batches
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP


def _data(n: int = 32) -> TensorDataset:
    return TensorDataset(torch.rand(n, 1, 8, 8), torch.arange(n) % 10, torch.arange(n))


def _cfg(**kw: object) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 8, "device": "cpu", "quiet": True, "lr": 0.01}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 16), st.integers(0, 3), st.integers(0, 5))
def test_epoch_batches_partition_the_samples_and_depend_only_on_seed_and_epoch(n, bs, seed, epoch) -> None:
    batches = epoch_batches(n, bs, seed, epoch)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert all(len(b) == bs for b in batches[:-1])
    assert batches == epoch_batches(n, bs, seed, epoch)


def test_distillation_algorithm_trains_student_and_leaves_frozen_teacher_unchanged(tmp_path: Path) -> None:
    teacher = DigitsCNN(width=4).eval()
    t_before = copy.deepcopy(teacher.state_dict())
    student = DigitsMLP(hidden=8)
    s_before = copy.deepcopy(student.state_dict())
    algo = ALGORITHMS.build({"type": "SingleTeacherDistill", "student": student, "teacher": teacher,
                             "distiller": kd_distiller()})
    result = Trainer(algo, _data(), val_data=_data(16), config=_cfg(epochs=2), run_dir=tmp_path).fit()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in s_before.items())
    steps = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) == 8 and {"distill.loss_kd", "student.loss", "loss", "lr"} <= steps[0].keys()
    assert [h["epoch"] for h in result.history] == [0, 1] and "val_accuracy" in result.final


def test_bf16_autocast_on_cpu_trains_with_finite_losses(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = Trainer(model, _data(), config=_cfg(amp="bf16"), run_dir=tmp_path).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "step"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert result.global_step == 4


def test_fp16_without_cuda_is_refused_with_advice() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    with pytest.raises(ValueError, match="amp='fp16' needs CUDA; use amp='bf16' on CPU"):
        Trainer(nn.Linear(64, 10), _data(), config=_cfg(amp="fp16"))


def test_gradient_clipping_bounds_the_sgd_update() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = _cfg(optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3, max_steps=1, scheduler="constant")
    Trainer(model, _data(), config=cfg).fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) <= 1e-3 + 1e-7


def test_max_steps_stops_mid_epoch() -> None:
    result = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _data(), config=_cfg(epochs=3, max_steps=6)).fit()
    assert result.global_step == 6 and len(result.history) == 2


def test_invalid_settings_list_every_problem_with_key_path() -> None:
    with pytest.raises(ValueError, match=r"schedule\.lr: must be > 0(.|\n)*schedule\.optimizer: must be one of"):
        Trainer(nn.Linear(2, 2), _data(), config=TrainConfig(lr=0.0, optimizer="lion"))


def test_quiet_run_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _data(), config=_cfg()).fit()
    assert capsys.readouterr().out == ""
