"""The torchpare command line: commands run, errors exit non-zero with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "distill", "prune", "finetune", "evaluate", "report", "demo", "examples:"):
        assert cmd in out


def test_missing_config_file_exits_2_with_one_line_and_no_traceback(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no config file at" in err and "nope.yaml" in err
    assert "Traceback" not in err


def test_bad_config_reports_every_problem_with_its_key_path(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _cfg(tmp_path, """
model: {type: DigitsMPL}
data: {type: digits, label_fraction: 3}
schedule: {epochs: 0, lr: fast, optimiser: sgd}
trainer: {}
""")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "problem(s)" in err
    for key in ("model.type:", "did you mean 'DigitsMLP'", "data.label_fraction:", "schedule.epochs:",
                "schedule.lr:", "schedule.optimiser:", "did you mean 'optimizer'", "trainer: unknown section"):
        assert key in err, key
    assert "Traceback" not in err


def test_distill_config_with_missing_teacher_checkpoint_names_the_key(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["distill", str(CONFIGS / "digits_kd.yaml"), "--set", f"teacher.checkpoint={tmp_path}/t.pt"])
    assert code == 2
    assert "teacher.checkpoint: no file at" in capsys.readouterr().err


def test_bad_override_syntax_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(CONFIGS / "digits_teacher.yaml"), "--set", "schedule.lr"]) == 2
    assert "expected key.sub=value" in capsys.readouterr().err


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", str(tmp_path / "nope.yaml")])


def test_report_of_missing_folder_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no run folder at" in capsys.readouterr().err


def test_train_then_evaluate_then_resume_error_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(out), "--quiet",
            "--set", "schedule.epochs=1", "--set", "model.width=4"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())["models"][0]
    assert 0.0 <= results["accuracy"] <= 1.0 and results["params"] > 0
    saved = (out / "config.yaml").read_text()
    assert "width: 4" in saved and "epochs: 1" in saved
    assert set(torch.load(out / "model.pt", weights_only=True)) >= {"fc.weight"}
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage")
    assert main([*args, "--resume"]) == 1
    assert "corrupt or truncated" in capsys.readouterr().err
    ev = ["evaluate", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "ev"),
          "--set", "model.width=4", "--set", f"model.checkpoint={out / 'model.pt'}"]
    assert main(ev) == 0
    again = json.loads((tmp_path / "ev" / "results.json").read_text())["models"][0]
    assert again["accuracy"] == results["accuracy"]
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()


def test_python_dash_m_entry_point_runs(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "torchpare", "report", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "has no results.json" in res.stderr and "Traceback" not in res.stderr


def test_prune_with_recovery_then_finetune_the_pruned_folder(tmp_path: Path) -> None:
    base = ["--quiet", "--set", "schedule.epochs=1", "--set", "model.width=4"]
    assert main(["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "t"), *base]) == 0
    assert main(["prune", str(CONFIGS / "digits_prune.yaml"), "--output", str(tmp_path / "p"), *base,
                 "--set", f"model.checkpoint={tmp_path / 't' / 'model.pt'}"]) == 0
    pruned = json.loads((tmp_path / "p" / "results.json").read_text())["models"][0]
    teacher = json.loads((tmp_path / "t" / "results.json").read_text())["models"][0]
    assert pruned["flops"] < 0.7 * teacher["flops"]
    assert (tmp_path / "p" / "model" / "pruning.json").is_file()
    assert main(["finetune", str(CONFIGS / "digits_prune.yaml"), "--output", str(tmp_path / "f"), *base,
                 "--set", f"model.checkpoint={tmp_path / 'p' / 'model'}"]) == 0
    tuned = json.loads((tmp_path / "f" / "results.json").read_text())["models"][0]
    assert tuned["params"] == pruned["params"]


def test_distill_from_a_trained_teacher_with_scarce_labels(tmp_path: Path) -> None:
    teacher_args = ["--quiet", "--set", "schedule.epochs=1", "--set", "model.width=4"]
    assert main(["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "t"), *teacher_args]) == 0
    assert main(["distill", str(CONFIGS / "digits_kd.yaml"), "--output", str(tmp_path / "kd"), "--quiet",
                 "--set", "schedule.epochs=1", "--set", "teacher.width=4",
                 "--set", f"teacher.checkpoint={tmp_path / 't' / 'model.pt'}"]) == 0
    steps = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert {"distill.loss_kd", "student.loss"} <= steps[0].keys()
    state = torch.load(tmp_path / "kd" / "model.pt", weights_only=True)
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}  # the student only


def test_saved_resolved_config_runs_again_as_is(tmp_path: Path) -> None:
    args = ["--quiet", "--set", "schedule.epochs=1", "--set", "model.width=4"]
    assert main(["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "a"), *args]) == 0
    assert main(["train", str(tmp_path / "a" / "config.yaml"), "--output", str(tmp_path / "b"), "--quiet"]) == 0
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same config: same weights
