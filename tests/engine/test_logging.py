"""Logging and progress: lines off a terminal, CSV and TensorBoard loggers, the resolved config saved."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from torchpare.cli.main import main
from torchpare.engine.loggers import CsvLogger, LoggerError, build_loggers
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_progress_lines_appear_on_stderr_per_epoch_while_the_run_goes(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    at_epoch_start: dict[int, str] = {}

    def watch(trainer: Trainer, record: dict[str, Any]) -> None:
        seen.append(capsys.readouterr().err)
        at_epoch_start.setdefault(record["epoch"], "".join(seen))

    cfg = TrainConfig(epochs=3, batch_size=8, log_every=2, lr=0.01)  # 6 steps per epoch
    Trainer(torch.nn.Linear(6, 2), _data(), val_data=_data(16), config=cfg, callbacks=[watch]).fit()
    err = "".join(seen) + capsys.readouterr().err
    epoch_lines = [line for line in err.splitlines() if " done: " in line]
    assert [line.split(" done:")[0] for line in epoch_lines] == [
        "train epoch 1/3 step 6/18", "train epoch 2/3 step 12/18", "train epoch 3/3 step 18/18"]
    for key in ("train_loss=", "lr=", "val_accuracy=", "val_loss=", "samples_per_s="):
        assert key in epoch_lines[0]
    # printed (and flushed) while the run goes: epoch 1's line is there when epoch 2 starts
    assert "train epoch 1/3 step 6/18 done:" in at_epoch_start[1]
    assert "train epoch 2/3" not in at_epoch_start[1].split("done:")[-1]
    step_lines = [line for line in err.splitlines() if " done: " not in line and line.startswith("train epoch")]
    assert [int(line.split(" step ")[1].split()[0]) for line in step_lines] == list(range(2, 19, 2))
    assert all("loss=" in line and "lr=" in line and "samples/s=" in line for line in step_lines)


def test_quiet_prints_no_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(torch.nn.Linear(6, 2), _data(), config=TrainConfig(epochs=1, batch_size=8, log_every=1, quiet=True)).fit()
    assert capsys.readouterr().err == ""


def test_csv_logger_writes_step_and_epoch_columns(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=2, batch_size=16, loggers=["jsonl", "csv"], quiet=True)
    Trainer(torch.nn.Linear(6, 2), _data(), val_data=_data(16), config=cfg, run_dir=tmp_path).fit()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames or []
    assert header[:6] == ["kind", "name", "epoch", "step", "loss", "lr"]
    assert {"train_loss", "val_accuracy", "val_loss", "epoch_time_s", "samples_per_s"} <= set(header)
    assert [r["kind"] for r in rows] == ["step"] * 3 + ["epoch"] + ["step"] * 3 + ["epoch"]
    assert rows[0]["train_loss"] == "" and float(rows[3]["val_accuracy"]) >= 0
    assert (tmp_path / "metrics.jsonl").is_file()  # always written: reports and --resume read it


def test_csv_logger_widens_its_header_and_drops_rows_after_a_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    log = CsvLogger(path)
    log.log({"kind": "step", "step": 1, "loss": 1.0})
    log.log({"kind": "step", "step": 2, "loss": 0.5, "kd": 0.25})
    log.log({"kind": "step", "step": 3, "loss": 0.4, "kd": 0.2})
    assert path.read_text().splitlines() == ["kind,step,loss,kd", "step,1,1.0,", "step,2,0.5,0.25", "step,3,0.4,0.2"]
    CsvLogger(path, resume_step=2)
    assert path.read_text().splitlines()[-1] == "step,2,0.5,0.25"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_logger_writes_an_event_file_with_the_losses(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(epochs=2, batch_size=16, loggers=["tensorboard"], quiet=True)
    Trainer(torch.nn.Linear(6, 2), _data(), val_data=_data(16), config=cfg, run_dir=tmp_path).fit()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("train/epoch/val_accuracy")] == [3, 6]


def test_tensorboard_without_its_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    problems = TrainConfig(loggers=["tensorboard"]).validate(prefix="schedule.")
    assert len(problems) == 1 and "schedule.loggers" in problems[0] and "torchpare[tensorboard]" in problems[0]
    with pytest.raises(LoggerError, match="tensorboard package"):
        build_loggers(["tensorboard"], "unused")


def test_unknown_logger_names_the_valid_ones() -> None:
    assert "unknown logger 'wandb'; use names from jsonl, csv, tensorboard" in TrainConfig(loggers=["wandb"]).validate()[0]


def test_cli_saves_the_resolved_config_and_prints_lines_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(out), "--set", "schedule.epochs=1",
            "--set", "model.width=4", "--set", "schedule.loggers=[jsonl,csv]"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "train epoch 1/1 step" in captured.err and "val_accuracy=" in captured.err
    assert "accuracy=" in captured.out  # the result line stays on stdout
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["task"] == "train"
    defaults = TrainConfig().to_dict()
    assert set(saved["schedule"]) == set(defaults)  # every setting, defaults filled in
    assert saved["schedule"]["lr"] == 0.003 and saved["schedule"]["grad_clip"] is None
    assert saved["schedule"]["loggers"] == ["jsonl", "csv"] and (out / "metrics.csv").is_file()
    # the saved config resumes its own run; the loggers may change on resume
    assert main(["train", str(out / "config.yaml"), "--output", str(out), "--resume", "--quiet",
                 "--set", "schedule.epochs=2", "--set", "schedule.loggers=[jsonl]"]) == 0
