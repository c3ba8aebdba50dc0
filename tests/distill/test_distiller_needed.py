"""ConfigurableDistiller hooks only the recorders its losses read and releases records once read."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.distiller import ConfigurableDistiller, MissingDataError
from torchpare.record import RecordIndexError


class Net(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.body = nn.Linear(64, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.mid(torch.relu(self.body(x)))))


def cfg(**flags):
    """KD on the logits; ``body`` and ``mid`` are recorded on both sides but no loss reads them."""
    side = {
        "logits": {"type": "ModuleOutputs", "source": "fc"},
        "body": {"type": "ModuleOutputs", "source": "body"},
        "mid": {"type": "ModuleInputs", "source": "mid"},
    }
    return {
        "student_recorders": copy.deepcopy(side),
        "teacher_recorders": copy.deepcopy(side),
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": 2.0}},
        "loss_forward_mappings": {
            "kl": {
                "preds_S": {"from_student": True, "recorder": "logits"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
        **flags,
    }


def digits(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data[:n] / 16.0, dtype=torch.float32)
    return x, torch.tensor(data.target[:n])


def prepared(**flags):
    torch.manual_seed(0)
    student, teacher = Net(8), Net(16)
    d = ConfigurableDistiller(**cfg(**flags))
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    return d, student, teacher


def n_hooks(module: nn.Module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def test_needed_recorders_are_the_ones_the_mappings_read():
    d, _, _ = prepared()
    assert d.needed_recorders == {"student": frozenset({"logits"}), "teacher": frozenset({"logits"})}
    assert d.student_recorders.needed == {"logits"} and d.teacher_recorders.needed == {"logits"}


def test_unread_recorders_are_not_hooked_inside_the_recording():
    d, student, teacher = prepared()
    x, _ = digits()
    with d.recording("teacher"), torch.no_grad():
        assert n_hooks(teacher.fc) == 1
        assert n_hooks(teacher.body) == 0 and n_hooks(teacher.mid) == 0
        teacher(x)
    with d.recording("student"):
        assert n_hooks(student.fc) == 1
        assert n_hooks(student.body) == 0 and n_hooks(student.mid) == 0
        student(x)
    assert all(n_hooks(m) == 0 for m in (*student.modules(), *teacher.modules()))
    assert len(d.student_recorders.get_recorder("body").data_buffer) == 0
    assert torch.isfinite(d.compute_distill_losses()["loss_kl"])


def test_reading_an_unread_recorder_says_record_only_needed_false():
    d, student, teacher = prepared()
    x, _ = digits()
    with d.recording("teacher"), torch.no_grad():
        teacher(x)
    with pytest.raises(RecordIndexError, match=r"no loss reads teacher recorder 'body'.*record_only_needed=False"):
        d.get_record("body", from_student=False)


def test_flags_off_restore_the_old_behaviour():
    d, student, teacher = prepared(record_only_needed=False, release_after_losses=False)
    x, _ = digits()
    with d.recording("teacher"), torch.no_grad():
        assert n_hooks(teacher.body) == 1 and n_hooks(teacher.mid) == 1
        teacher(x)
    with d.recording("student"):
        student(x)
    loss = d.compute_distill_losses()["loss_kl"]
    assert torch.isfinite(loss)
    # every record is still there after the losses read them
    torch.testing.assert_close(d.get_record("body", from_student=True), student.body(x))
    torch.testing.assert_close(d.get_record("logits", from_student=False), teacher(x))
    torch.testing.assert_close(d.compute_distill_losses()["loss_kl"], loss)


def test_records_holding_a_graph_are_released_after_the_losses_read_them_no_grad_ones_are_kept():
    d, student, teacher = prepared()
    x, _ = digits()
    for _ in range(2):
        with d.recording("teacher"), torch.no_grad():
            teacher(x)
        with d.recording("student"):
            student(x)
        loss = d.compute_distill_losses()["loss_kl"]
        assert len(d.student_recorders.get_recorder("logits").data_buffer) == 0
        # the no_grad teacher records stay: the next recording replaces them one by one (allocator reuse)
        torch.testing.assert_close(d.get_record("logits", from_student=False), teacher(x))
        loss.backward()  # the loss keeps what its backward needs
        assert student.fc.weight.grad is not None
    with pytest.raises(RecordIndexError, match="released the records.*release_after_losses=False"):
        d.get_record("logits", from_student=True)


def test_release_all_drops_the_no_grad_teacher_records_too():
    d, student, teacher = prepared(release_after_losses="all")
    x, _ = digits()
    with d.recording("teacher"), torch.no_grad():
        teacher(x)
    with d.recording("student"):
        student(x)
    d.compute_distill_losses()["loss_kl"].backward()
    assert all(len(r.data_buffer) == 0 for m in (d.student_recorders, d.teacher_recorders) for _, r in m)
    with d.recording("teacher"), torch.no_grad():  # the next step records again
        teacher(x)
    torch.testing.assert_close(d.get_record("logits", from_student=False), teacher(x))


def test_a_teacher_recorded_with_grad_is_released_self_distill_style():
    student = Net(8)
    d = ConfigurableDistiller(**cfg())
    d.prepare_from_student(student)
    d.prepare_from_teacher(student)
    x, _ = digits()
    with d.recording("student"), d.recording("teacher"):
        student(x)  # one forward fills both sides, with grad
    d.compute_distill_losses(detach_teacher=True)["loss_kl"].backward()
    assert all(len(r.data_buffer) == 0 for m in (d.student_recorders, d.teacher_recorders) for _, r in m)


def test_release_after_losses_rejects_other_values():
    with pytest.raises(ValueError, match="release_after_losses must be True, False or 'all'"):
        ConfigurableDistiller(**cfg(release_after_losses="yes"))


def test_a_missing_data_key_is_reported_before_any_record_is_read_or_released():
    d = ConfigurableDistiller(
        student_recorders={"logits": {"type": "ModuleOutputs", "source": "fc"}},
        teacher_recorders={"logits": {"type": "ModuleOutputs", "source": "fc"}},
        distill_losses={"dkd": {"type": "DKDLoss"}},
        loss_forward_mappings={"dkd": {
            "preds_S": {"from_student": True, "recorder": "logits"},
            "preds_T": {"from_student": False, "recorder": "logits"},
            "gt_labels": {"from_data": "targets"},
        }},
    )
    student, teacher = Net(8), Net(16)
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    x, y = digits()
    with d.recording("teacher"), torch.no_grad():
        teacher(x)
    with d.recording("student"):
        student(x)
    with pytest.raises(MissingDataError, match="'targets'"):
        d.compute_distill_losses({})
    assert torch.isfinite(d.compute_distill_losses({"targets": y})["loss_dkd"])  # records were kept


def test_single_teacher_losses_and_gradients_are_the_same_with_the_flags_on_and_off():
    x, y = digits()
    results = []
    for flags in ({}, {"record_only_needed": False, "release_after_losses": False}):
        torch.manual_seed(0)
        student, teacher = Net(8), Net(16)
        algo = SingleTeacherDistill(student, teacher, cfg(**flags))
        losses = algo.loss(x, y)
        algo.total_loss(losses).backward()
        results.append(({k: v.detach() for k, v in losses.items()}, student.body.weight.grad.clone()))
    (losses_on, grad_on), (losses_off, grad_off) = results
    assert losses_on.keys() == losses_off.keys() == {"student.loss", "distill.loss_kl"}
    for key in losses_on:
        torch.testing.assert_close(losses_on[key], losses_off[key])
    torch.testing.assert_close(grad_on, grad_off)
