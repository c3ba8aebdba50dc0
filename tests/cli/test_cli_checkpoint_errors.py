"""A bad model.checkpoint (or teacher checkpoint) exits 2 with one line naming the key, file and tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1] == "(run with --debug for the traceback)"
    return lines[:-1]


def test_garbage_model_checkpoint_is_one_line_not_a_state_dict(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    code = main(["evaluate", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "e"),
                 "--set", f"model.checkpoint={bad}"])
    assert code == 2
    (line,) = _error_lines(capsys)
    assert f"model.checkpoint: '{bad}' is not a torch state dict (UnpicklingError: " in line
    assert "weights_only" not in line  # torch's advice to load unsafely is not repeated


def test_wrong_width_model_checkpoint_names_the_first_tensor_and_both_shapes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "w8.pt"
    torch.save(DigitsCNN(width=8).state_dict(), ckpt)
    code = main(["evaluate", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "e"),
                 "--set", "model.width=16", "--set", f"model.checkpoint={ckpt}"])
    assert code == 2
    (line,) = _error_lines(capsys)
    assert (f"model.checkpoint: '{ckpt}' does not fit DigitsCNN: 21 tensor(s) differ in shape, first "
            "stem.conv.weight (8, 1, 3, 3) in the file vs (16, 1, 3, 3) in the model") in line


def test_training_checkpoint_given_as_model_checkpoint_points_to_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "last.pt"
    torch.save({"model": DigitsCNN(width=4).state_dict(), "step": 3}, ckpt)
    assert main(["evaluate", str(CONFIGS / "digits_teacher.yaml"), "--output", str(tmp_path / "e"),
                 "--set", "model.width=4", "--set", f"model.checkpoint={ckpt}"]) == 2
    (line,) = _error_lines(capsys)
    assert "model.checkpoint:" in line and "is not a torch state dict" in line and "--resume" in line


def test_wrong_width_teacher_checkpoint_names_the_teacher_key(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "t.pt"
    torch.save(DigitsCNN(width=4).state_dict(), ckpt)
    code = main(["distill", str(CONFIGS / "digits_kd.yaml"), "--output", str(tmp_path / "kd"), "--quiet",
                 "--set", f"teacher.checkpoint={ckpt}"])  # the config says width 32
    assert code == 2
    (line,) = _error_lines(capsys)
    assert f"teacher.checkpoint: '{ckpt}' does not fit DigitsCNN" in line
    assert "(4, 1, 3, 3) in the file vs (32, 1, 3, 3) in the model" in line
