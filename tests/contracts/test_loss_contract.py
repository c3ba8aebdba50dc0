"""Every registered loss: builds from a dict, scales with loss_weight, returns a finite scalar, backprops
to the student inputs, keeps the team's forward argument names and names both shapes on a mismatch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch

import torchpare.distill.losses as losses_pkg
from torchpare.distill.losses import LossShapeError
from torchpare.registry import LOSSES


def _logits(n: int = 4, c: int = 10) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(n, c), torch.randn(n, c))


def _labelled(n: int = 4, c: int = 10) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(n, c), torch.randn(n, c), torch.arange(n) % c)


def _maps(s: tuple[int, ...], t: tuple[int, ...]) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(*s), torch.randn(*t))


# name -> (constructor kwargs, good inputs (student first), mismatched inputs)
CASES: dict[str, tuple[dict[str, Any], Callable[[], tuple], Callable[[], tuple]]] = {
    "KLDivergence": ({"tau": 4.0}, _logits(), _maps((4, 10), (4, 7))),
    "DKDLoss": ({}, _labelled(), lambda: (torch.randn(4, 10), torch.randn(4, 8), torch.arange(4))),
    "DISTLoss": ({}, _logits(), _maps((4, 10), (4, 9))),
    "WSLDLoss": ({}, _labelled(), lambda: (torch.randn(4, 10), torch.randn(3, 10), torch.arange(4))),
    "ChannelWiseDivergence": (
        {"tau": 2.0},
        _maps((2, 3, 4, 4), (2, 3, 4, 4)),
        _maps((2, 3, 4, 4), (2, 5, 4, 4)),
    ),
    "ATLoss": ({}, _maps((2, 3, 4, 4), (2, 6, 4, 4)), _maps((2, 3, 4, 4), (2, 3, 8, 8))),
    "FTLoss": ({}, _maps((2, 3, 4, 4), (2, 3, 4, 4)), _maps((2, 3, 4, 4), (2, 4, 4, 4))),
    "ABLoss": ({}, _maps((2, 3, 4, 4), (2, 3, 4, 4)), _maps((2, 3, 4, 4), (2, 3, 4, 5))),
    "OFDLoss": ({"mul_factor": 1.0}, _maps((2, 3, 4, 4), (2, 3, 4, 4)), _maps((2, 3, 4, 4), (2, 6, 4, 4))),
    "RKDDistance": ({}, _maps((5, 6), (5, 9)), _maps((5, 6), (4, 6))),
    "RKDAngle": ({}, _maps((5, 6), (5, 9)), _maps((5, 6), (4, 6))),
    "PKDLoss": ({}, _maps((2, 3, 8, 8), (2, 3, 4, 4)), _maps((2, 3, 4, 4), (2, 5, 4, 4))),
    "MGDLoss": (
        {"student_channels": 3, "teacher_channels": 5, "alpha_mgd": 1.0},
        _maps((2, 3, 4, 4), (2, 5, 4, 4)),
        _maps((2, 3, 4, 4), (2, 5, 6, 6)),
    ),
    "CRDLoss": (
        {"num_data": 16, "s_dim": 6, "t_dim": 8, "feat_dim": 4, "nce_k": 5},
        lambda: (torch.randn(3, 6), torch.randn(3, 8), torch.tensor([0, 4, 9])),
        lambda: (torch.randn(3, 6), torch.randn(3, 7), torch.tensor([0, 4, 9])),
    ),
    "FBKDLoss": ({"in_channels": 3}, _maps((2, 3, 4, 4), (2, 3, 4, 4)), _maps((2, 3, 4, 4), (2, 3, 5, 5))),
    "L1Loss": ({}, _maps((2, 5), (2, 5)), _maps((2, 5), (2, 6))),
    "L2Loss": ({"normalize": True}, _maps((2, 3, 4), (2, 3, 4)), _maps((2, 3, 4), (2, 3, 5))),
    "MSELoss": ({}, _maps((2, 5), (2, 5)), _maps((2, 5), (2, 6))),
}

LOGIT_LOSSES = {"KLDivergence", "DKDLoss", "DISTLoss", "WSLDLoss"}
NAMES = LOSSES.names()


def _run(name: str, weight: float, inputs: tuple) -> torch.Tensor:
    kwargs, _, _ = CASES[name]
    torch.manual_seed(1)  # same parameters (CRD, MGD, FBKD heads) and same random masks/negatives
    loss = LOSSES.build({"type": name, **kwargs, "loss_weight": weight})
    torch.manual_seed(2)
    return loss(*inputs)


def test_every_registered_loss_has_a_contract_case_and_is_exported():
    assert sorted(CASES) == NAMES
    exported = {n for n in losses_pkg.__all__ if n != "LossShapeError"}
    assert exported == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_loss_builds_from_dict_and_returns_finite_scalar(name):
    inputs = CASES[name][1]()
    out = _run(name, 1.0, inputs)
    assert isinstance(out, torch.Tensor) and out.dim() == 0
    assert torch.isfinite(out)


@pytest.mark.parametrize("name", NAMES)
def test_loss_weight_scales_output_linearly(name):
    inputs = CASES[name][1]()
    base = _run(name, 1.0, inputs)
    scaled = _run(name, 2.5, inputs)
    torch.testing.assert_close(scaled, 2.5 * base, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_loss_backprops_to_student_input(name):
    inputs = list(CASES[name][1]())
    student = inputs[0].clone().requires_grad_(True)
    inputs[0] = student
    _run(name, 1.0, tuple(inputs)).backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_loss_detaches_teacher_input_by_default(name):
    inputs = list(CASES[name][1]())
    inputs[0] = inputs[0].clone().requires_grad_(True)
    teacher = inputs[1].clone().requires_grad_(True)
    inputs[1] = teacher
    _run(name, 1.0, tuple(inputs)).backward()
    assert teacher.grad is None


# ABLoss reads the teacher only through its sign: it has no gradient path and no teacher_detach.
DETACHABLE = [n for n in NAMES if "teacher_detach" in inspect.signature(LOSSES.get(n)).parameters]


def test_only_losses_without_teacher_gradient_path_lack_teacher_detach():
    assert sorted(set(NAMES) - set(DETACHABLE)) == ["ABLoss"]


@pytest.mark.parametrize("name", DETACHABLE)
def test_loss_with_teacher_detach_false_backprops_to_teacher_input(name):
    kwargs = CASES[name][0]
    inputs = list(CASES[name][1]())
    teacher = inputs[1].clone().requires_grad_(True)
    inputs[1] = teacher
    torch.manual_seed(1)
    loss = LOSSES.build({"type": name, **kwargs, "teacher_detach": False})
    torch.manual_seed(2)
    loss(*inputs).backward()
    assert teacher.grad is not None and torch.isfinite(teacher.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_loss_forward_uses_team_argument_names(name):
    params = list(inspect.signature(LOSSES.get(name).forward).parameters)[1:3]
    expected = ["preds_S", "preds_T"] if name in LOGIT_LOSSES else ["s_feature", "t_feature"]
    assert params == expected


@pytest.mark.parametrize("name", NAMES)
def test_loss_has_default_unit_loss_weight(name):
    assert inspect.signature(LOSSES.get(name)).parameters["loss_weight"].default == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_shapes_raise_error_naming_loss_and_both_shapes(name):
    bad = CASES[name][2]()
    loss = LOSSES.build({"type": name, **CASES[name][0]})
    with pytest.raises(LossShapeError) as info:
        loss(*bad)
    msg = str(info.value)
    assert msg.startswith(name)
    assert str(tuple(bad[0].shape)) in msg
    assert str(tuple(bad[1].shape)) in msg
