"""--resume refuses any change of the resolved config (but more epochs and logging), and writes nothing then;
a used run folder needs --resume or --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.engine.checkpoint import RESUME_MAY_CHANGE, config_fingerprint
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["--quiet", "--set", "schedule.epochs=1", "--set", "model.width=4"]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp") / "run"
    assert main(["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(out), *TINY,
                 "--set", "data.label_fraction=0.5"]) == 0
    return out


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("schedule.weight_decay=0.1", "config.schedule.weight_decay"),
        ("data.label_fraction=0.2", "config.data.label_fraction"),
        ("schedule.lr=0.5", "config.schedule.lr"),
        ("schedule.seed=3", "config.schedule.seed"),
    ],
)
def test_resume_with_a_changed_setting_is_refused_and_touches_nothing(
    trained: Path, override: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(trained)
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(trained), *TINY,
            "--set", "data.label_fraction=0.5", "--set", override, "--resume"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"setting '{key}'" in err and "does not match this run" in err
    assert _snapshot(trained) == before  # config.yaml, metrics, checkpoints untouched


def test_resume_may_add_epochs_and_change_logging(trained: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "more"
    shutil.copytree(trained, run)
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(run), "--quiet",
            "--set", "model.width=4", "--set", "data.label_fraction=0.5", "--set", "schedule.epochs=2",
            "--set", "schedule.checkpoint_every=5", "--resume"]
    assert main(args) == 0
    assert "epochs: 2" in (run / "config.yaml").read_text()
    assert {"schedule.epochs", "schedule.max_steps", "schedule.quiet"} <= set(RESUME_MAY_CHANGE)


def test_resume_with_a_retrained_teacher_checkpoint_at_the_same_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save(DigitsCNN(width=4).state_dict(), teacher)
    out = tmp_path / "kd"
    args = ["distill", str(CONFIGS / "digits_kd.yaml"), "--output", str(out), "--quiet",
            "--set", "schedule.epochs=1", "--set", "teacher.width=4", "--set", f"teacher.checkpoint={teacher}"]
    assert main(args) == 0
    before = _snapshot(out)
    assert main([*args, "--set", "algorithm.distiller.distill_losses.kd.tau=2", "--resume"]) == 1
    assert "config.algorithm.distiller.distill_losses.kd.tau' is 4 in the checkpoint, 2 now" in capsys.readouterr().err
    torch.manual_seed(1)
    torch.save(DigitsCNN(width=4).state_dict(), teacher)  # "retrained": same path, other weights
    assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "config.teacher.checkpoint" in err and "sha256" in err
    assert _snapshot(out) == before


def test_non_empty_run_folder_needs_resume_or_overwrite(trained: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "again"
    shutil.copytree(trained, run)
    before = _snapshot(run)
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(run), *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "--resume" in err
    assert _snapshot(run) == before
    (run / "checkpoints" / "step-00000999.pt").write_bytes(b"stale")
    assert main([*args, "--overwrite"]) == 0
    assert not (run / "checkpoints" / "step-00000999.pt").exists()  # the old run's files are gone


def test_config_fingerprint_leaves_out_only_the_documented_keys(tmp_path: Path) -> None:
    w = tmp_path / "w.pt"
    w.write_bytes(b"x")
    fp = config_fingerprint({"output": "a", "name": "n", "schedule": {"epochs": 3, "weight_decay": 0.1},
                             "teacher": {"checkpoint": str(w)}, "algorithm": {"teacher_ckpt": str(w)}})
    assert set(fp) == {"config.schedule.weight_decay", "config.teacher.checkpoint", "config.algorithm.teacher_ckpt"}
    assert "sha256" in fp["config.teacher.checkpoint"]


def test_resume_path_from_the_command_line_picks_that_checkpoint(trained: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "pick"
    shutil.copytree(trained, run)
    best = run / "checkpoints" / "best.pt"
    assert best.is_file()
    args = ["train", str(CONFIGS / "digits_teacher.yaml"), "--output", str(run), "--quiet",
            "--set", "model.width=4", "--set", "data.label_fraction=0.5", "--set", "schedule.epochs=2",
            "--resume", str(best)]
    assert main(args) == 0
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in line]
    assert len(steps) == 2  # epoch 1 from the checkpoint, epoch 2 run now
