"""teacher_ckpt errors name the algorithm, the file and the first tensor that does not fit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.algorithms.base import load_checkpoint
from torchpare.zoo import DigitsCNN, DigitsMLP


def _kd() -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4.0}},
        "loss_forward_mappings": {"kl": {"preds_S": {"from_student": True, "recorder": "logits"},
                                         "preds_T": {"from_student": False, "recorder": "logits"}}},
    }


def test_wrong_width_teacher_ckpt_names_algorithm_path_and_first_tensor_with_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=8).state_dict(), path)
    expected = (
        f"SingleTeacherDistill(teacher_ckpt): '{path}' does not fit DigitsCNN: "
        "21 tensor(s) differ in shape, first stem.conv.weight (8, 1, 3, 3) in the file vs (16, 1, 3, 3)"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        SingleTeacherDistill(DigitsMLP(), DigitsCNN(width=16), _kd(), teacher_ckpt=path)


def test_wrong_width_is_detected_before_any_tensor_is_copied(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    state = DigitsCNN(width=8).state_dict()
    state["fc.weight"] = torch.zeros(10, 99)  # only the last tensor differs
    torch.save(state, path)
    teacher = DigitsCNN(width=8)
    before = teacher.stem.conv.weight.detach().clone()
    with pytest.raises(ValueError, match=r"1 tensor\(s\) differ in shape, first fc\.weight \(10, 99\)"):
        load_checkpoint(teacher, path, "SingleTeacherDistill")
    assert torch.equal(teacher.stem.conv.weight, before)  # the model is untouched


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04 not really a zip"])
def test_garbage_teacher_ckpt_is_reported_as_not_a_state_dict(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "teacher.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"SingleTeacherDistill\(teacher_ckpt\): '.*teacher\.pt' is not a torch state "
                                         r"dict \(\w+: ") as exc:
        SingleTeacherDistill(DigitsMLP(), DigitsCNN(width=8), _kd(), teacher_ckpt=path)
    assert "weights_only=False" not in str(exc.value)  # torch's advice would be unsafe here
    assert "\n" not in str(exc.value)


def test_a_pickled_non_mapping_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match=r"teacher_ckpt\): '.*' is not a torch state dict \(it holds a list\)"):
        load_checkpoint(DigitsCNN(width=8), path, "SingleTeacherDistill")


def test_wrong_width_safetensors_is_reported_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in DigitsCNN(width=8).state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"teachers\['a'\]\): '.*teacher\.safetensors' does not fit DigitsCNN"):
        load_checkpoint(DigitsCNN(width=16), path, "MultiTeacherDistill", arg="teachers['a']")


def test_matching_teacher_ckpt_still_loads(tmp_path: Path) -> None:
    trained = DigitsCNN(width=8)
    path = tmp_path / "teacher.pt"
    torch.save(trained.state_dict(), path)
    teacher = DigitsCNN(width=8)
    assert load_checkpoint(teacher, path, "X") == {"missing_keys": [], "unexpected_keys": []}
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), trained.state_dict().values()))
