"""torchpare.model_io: one rule for calling models on batches, logits, unlabelled targets, weight files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from torchpare.distill.algorithms import SingleTeacherDistill, default_student_loss, forward_model
from torchpare.distill.algorithms import logits_of as distill_logits_of
from torchpare.engine.objective import SupervisedObjective, masked_cross_entropy
from torchpare.engine.objective import logits_of as engine_logits_of
from torchpare.model_io import StateDictFileError, call_model, load_state_dict_file, logits_of
from torchpare.zoo import DigitsCNN, DigitsMLP


class TwoArgs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(a + b)


def test_list_and_tuple_batches_are_unpacked_the_same_way_by_distill_and_engine() -> None:
    model = TwoArgs()
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    expected = model(a, b)
    for inputs in ((a, b), [a, b]):
        assert torch.equal(call_model(model, inputs), expected)
        assert torch.equal(forward_model(model, inputs), expected)
        assert torch.equal(SupervisedObjective(model)(inputs), expected)  # the engine called model(list) before
    assert torch.equal(call_model(model, {"a": a, "b": b}), expected)


def test_supervised_objective_takes_a_dict_batch() -> None:
    model = TwoArgs()
    loss = SupervisedObjective(model).loss({"a": torch.randn(4, 3), "b": torch.randn(4, 3)}, torch.tensor([0, 1, 0, 1]))
    assert loss["loss_ce"].requires_grad


def test_logits_of_is_one_function_that_raises_on_an_output_without_logits() -> None:
    assert distill_logits_of is logits_of and engine_logits_of is logits_of
    with pytest.raises(TypeError, match=r"cannot find logits in a model output of type str"):
        logits_of("no logits")
    with pytest.raises(TypeError, match="cannot find logits"):
        logits_of({"hidden": torch.zeros(1)})


def test_every_negative_target_is_unlabelled_in_distill_and_engine() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.tensor([1, -1, 3, -100])
    expected = nn.functional.cross_entropy(logits[[0, 2]], targets[[0, 2]])
    assert torch.allclose(masked_cross_entropy(logits, targets), expected)
    assert torch.allclose(default_student_loss(logits, targets), expected)  # distill raised on -1 before
    zero = default_student_loss(logits, torch.tensor([-1, -1, -100, -5]))
    assert zero.item() == 0.0 and zero.requires_grad


def test_sequence_logits_and_soft_targets_keep_working() -> None:
    logits = torch.randn(2, 3, 4)
    targets = torch.tensor([[0, -100, 2], [1, 3, -100]])
    flat = logits.flatten(0, 1)[targets.flatten() >= 0]
    assert torch.allclose(masked_cross_entropy(logits, targets),
                          nn.functional.cross_entropy(flat, targets.flatten()[targets.flatten() >= 0]))
    soft = torch.softmax(torch.randn(2, 4), 1)
    assert torch.allclose(masked_cross_entropy(logits[:, 0], soft), nn.functional.cross_entropy(logits[:, 0], soft))


def _kd() -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4.0}},
        "loss_forward_mappings": {"kl": {"preds_S": {"from_student": True, "recorder": "logits"},
                                         "preds_T": {"from_student": False, "recorder": "logits"}}},
    }


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "ddp", "ddp+state_dict"])
def test_teacher_checkpoints_in_common_wrappings_load(tmp_path: Path, wrap: str) -> None:
    trained = DigitsCNN(width=4)
    state = trained.state_dict()
    if "ddp" in wrap:
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap.endswith("state_dict"):
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "model":
        state = {"model": state, "optimizer": {}}
    torch.save(state, tmp_path / "t.pt")
    teacher = DigitsCNN(width=4)
    algo = SingleTeacherDistill(DigitsMLP(), teacher, _kd(), teacher_ckpt=tmp_path / "t.pt")
    assert algo.teacher_load_report == {"missing_keys": [], "unexpected_keys": []}
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), trained.state_dict().values()))


def test_teacher_checkpoint_that_does_not_fill_the_teacher_is_an_error_naming_the_keys(tmp_path: Path) -> None:
    state = {k: v for k, v in DigitsCNN(width=4).state_dict().items() if not k.startswith("fc.")}
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "t.pt")
    with pytest.raises(ValueError, match=re.escape("does not fill DigitsCNN: 2 missing key(s) (first fc.weight, "
                                                   "fc.bias), 1 unexpected key(s) (first head.weight)")) as exc:
        SingleTeacherDistill(DigitsMLP(), DigitsCNN(width=4), _kd(), teacher_ckpt=tmp_path / "t.pt")
    assert "strict: false" in str(exc.value) and "SingleTeacherDistill(teacher_ckpt)" in str(exc.value)


def test_multi_teacher_checkpoint_is_strict_too(tmp_path: Path) -> None:
    from torchpare.distill.algorithms import MultiTeacherDistill

    torch.save({"stem.conv.weight": DigitsCNN(width=4).stem.conv.weight}, tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"teacher_ckpts\['a'\]\): .* does not fill DigitsCNN"):
        MultiTeacherDistill(DigitsMLP(), {"a": DigitsCNN(width=4)}, {"a": _kd()},
                            teacher_ckpts={"a": tmp_path / "t.pt"})
    with pytest.warns(UserWarning, match="strict=False: missing keys"):
        MultiTeacherDistill(DigitsMLP(), {"a": DigitsCNN(width=4)}, {"a": _kd()},
                            teacher_ckpts={"a": {"path": str(tmp_path / "t.pt"), "strict": False}})


def test_load_state_dict_file_checks_shapes_before_copying(tmp_path: Path) -> None:
    torch.save({"weight": torch.ones(4, 2), "bias": torch.ones(5)}, tmp_path / "w.pt")
    model = nn.Linear(2, 4)
    before = model.weight.detach().clone()
    with pytest.raises(StateDictFileError, match=r"first bias \(5,\) in the file vs \(4,\) in the model"):
        load_state_dict_file(model, tmp_path / "w.pt", "here")
    assert torch.equal(model.weight, before)


def test_engine_model_checkpoint_accepts_ddp_and_state_dict_wrapping_but_not_a_training_checkpoint(
        tmp_path: Path) -> None:
    from torchpare.engine.config import ConfigError
    from torchpare.engine.runner import build_model

    trained = DigitsCNN(width=4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "ddp.pt")
    model = build_model({"type": "DigitsCNN", "width": 4, "checkpoint": str(tmp_path / "ddp.pt")}, "teacher")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    torch.save({"model": trained.state_dict(), "step": 3}, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match=r"teacher\.checkpoint: .* is not a torch state dict.*--resume"):
        build_model({"type": "DigitsCNN", "width": 4, "checkpoint": str(tmp_path / "last.pt")}, "teacher")
