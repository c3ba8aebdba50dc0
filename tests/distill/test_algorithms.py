"""Distillation algorithms: frozen/trainable teachers, gradients, inputs, self/multi/online recipes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchpare.distill.algorithms import MultiTeacherDistill, OnlineDistill, SelfDistill, SingleTeacherDistill
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP, DigitsSmallCNN


def kd_distiller(student_source: str = "fc", teacher_source: str = "fc", tau: float = 4.0, **extra):
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": student_source}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": teacher_source}},
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": tau}},
        "loss_forward_mappings": {
            "kl": {
                "preds_S": {"from_student": True, "recorder": "logits"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
        **extra,
    }


def feature_distiller():
    """FitNets-style: student layer3 (8w channels... via connector) -> teacher layer3, plus logits KD."""
    cfg = kd_distiller()
    cfg["student_recorders"]["feat"] = {"type": "ModuleOutputs", "source": "layer3"}
    cfg["teacher_recorders"]["feat"] = {"type": "ModuleOutputs", "source": "layer3"}
    cfg["connectors"] = {"proj": {"type": "ConvModuleConnector", "in_channels": 16, "out_channels": 32}}
    cfg["distill_losses"]["mse"] = {"type": "L2Loss"}
    cfg["loss_forward_mappings"]["mse"] = {
        "s_feature": {"from_student": True, "recorder": "feat", "connector": "proj"},
        "t_feature": {"from_student": False, "recorder": "feat"},
    }
    return cfg


def batch(n: int = 8):
    return torch.rand(n, 1, 8, 8), torch.arange(n) % 10


def sgd_step(algo, x, y, lr=0.1, **extra):
    opt = torch.optim.SGD(algo.trainable_parameters(), lr=lr)
    opt.zero_grad()
    losses = algo.loss(x, y, **extra)
    algo.total_loss(losses).backward()
    opt.step()
    return losses


def train_steps(algo, steps=8, lr=0.1):
    torch.manual_seed(1)
    x, y = batch(32)
    opt = torch.optim.SGD(algo.trainable_parameters(), lr=lr)
    totals = []
    for _ in range(steps):
        opt.zero_grad()
        losses = algo.loss(x, y)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        total = algo.total_loss(losses)
        total.backward()
        opt.step()
        totals.append(total.item())
    return totals, losses


# -- SingleTeacherDistill ----------------------------------------------------------------------
def test_frozen_teacher_is_bit_identical_and_bn_stats_unchanged_after_a_step():
    teacher = DigitsCNN(width=8)
    algo = SingleTeacherDistill(DigitsSmallCNN(width=4), teacher, feature_distiller())
    before = copy.deepcopy(teacher.state_dict())
    algo.train()
    sgd_step(algo, *batch())
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert int(teacher.layer1.bn.num_batches_tracked) == 0


def test_gradients_reach_student_and_connectors_never_the_frozen_teacher():
    teacher = DigitsCNN(width=8)
    algo = SingleTeacherDistill(DigitsSmallCNN(width=4), teacher, feature_distiller())
    losses = algo.loss(*batch())
    algo.total_loss(losses).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in algo.student.parameters())
    assert all(p.grad is not None for p in algo.distiller.connectors["proj"].parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_parameters_and_state_dict_hold_student_and_connectors_not_the_frozen_teacher():
    teacher = DigitsCNN(width=8)
    algo = SingleTeacherDistill(DigitsSmallCNN(width=4), teacher, feature_distiller())
    ids = {id(p) for p in algo.parameters()}
    assert not ids & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in algo.student.parameters()} <= ids
    assert {id(p) for p in algo.distiller.connectors.parameters()} <= ids
    assert {id(p) for p in algo.trainable_parameters()} == ids
    assert all(k.startswith(("student.", "distiller.")) for k in algo.state_dict())
    assert algo.teacher is teacher


def test_frozen_teacher_stays_in_eval_under_train_and_its_dropout_is_off():
    teacher = nn.Sequential()
    teacher.add_module("body", nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5)))
    teacher.add_module("fc", nn.Linear(32, 10))
    algo = SingleTeacherDistill(DigitsMLP(), teacher, kd_distiller("fc2", "fc"))
    algo.train()
    assert algo.training and algo.student.training and not teacher.training
    x, y = batch()
    algo.loss(x, y)
    first = algo.distiller.teacher_recorders.get_recorder("logits").get_record_data().clone()
    algo.loss(x, y)
    second = algo.distiller.teacher_recorders.get_recorder("logits").get_record_data()
    assert torch.equal(first, second)
    assert not first.requires_grad  # ran under no_grad


def test_trainable_teacher_trains_with_norms_in_eval_and_reports_teacher_loss():
    teacher = DigitsCNN(width=8)
    algo = SingleTeacherDistill(DigitsSmallCNN(width=4), teacher, kd_distiller(), teacher_trainable=True)
    algo.train()
    assert teacher.training and not teacher.layer1.bn.training
    ids = {id(p) for p in algo.trainable_parameters()}
    assert {id(p) for p in teacher.parameters()} <= ids
    w = teacher.fc.weight.detach().clone()
    losses = sgd_step(algo, *batch())
    assert set(losses) == {"teacher.loss", "student.loss", "distill.loss_kl"}
    assert not torch.equal(w, teacher.fc.weight)
    assert int(teacher.layer1.bn.num_batches_tracked) == 0


def test_trainable_teacher_without_norm_eval_updates_its_bn_statistics():
    teacher = DigitsCNN(width=8)
    algo = SingleTeacherDistill(
        DigitsSmallCNN(width=4), teacher, kd_distiller(), teacher_trainable=True, teacher_norm_eval=False
    )
    algo.train()
    assert teacher.layer1.bn.training
    sgd_step(algo, *batch())
    assert int(teacher.layer1.bn.num_batches_tracked) == 1


def test_student_trainable_false_freezes_student_but_connectors_train():
    algo = SingleTeacherDistill(
        DigitsSmallCNN(width=4), DigitsCNN(width=8), feature_distiller(), student_trainable=False
    )
    ids = {id(p) for p in algo.trainable_parameters()}
    assert ids == {id(p) for p in algo.distiller.parameters()}


def test_inputs_as_tuple_and_dict_and_targets_none():
    class TwoInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, a, b):
            return self.fc(torch.cat([a, b], 1))

    algo = SingleTeacherDistill(TwoInput(), TwoInput(), kd_distiller())
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    y = torch.tensor([0, 1, 2, 0])
    by_tuple = algo.loss((a, b), y)
    by_dict = algo.loss({"a": a, "b": b}, y)
    assert set(by_tuple) == {"student.loss", "distill.loss_kl"}
    torch.testing.assert_close(by_tuple["distill.loss_kl"], by_dict["distill.loss_kl"])
    assert set(algo.loss((a, b), None)) == {"distill.loss_kl"}


def test_custom_student_loss_and_calculate_student_loss_false():
    calls = []

    def mse_to_onehot(outputs, targets):
        calls.append(outputs.shape)
        return (outputs.softmax(1) - nn.functional.one_hot(targets, 10).float()).pow(2).mean()

    algo = SingleTeacherDistill(
        DigitsMLP(), DigitsSmallCNN(), kd_distiller("fc2"), student_loss=mse_to_onehot
    )
    losses = algo.loss(*batch())
    assert calls == [torch.Size([8, 10])] and "student.loss" in losses
    algo.calculate_student_loss = False
    assert set(algo.loss(*batch())) == {"distill.loss_kl"}


def test_teacher_ckpt_with_strict_false_loads_weights_only_and_reports_missing_keys(tmp_path):
    trained = DigitsCNN(width=8)
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": state}, path)
    teacher = DigitsCNN(width=8)
    with pytest.warns(UserWarning, match=r"missing keys \['fc.weight', 'fc.bias'\].*'extra.weight'"):
        algo = SingleTeacherDistill(
            DigitsSmallCNN(width=4), teacher, kd_distiller(), teacher_ckpt={"path": path, "strict": False}
        )
    assert algo.teacher_load_report == {
        "missing_keys": ["fc.weight", "fc.bias"],
        "unexpected_keys": ["extra.weight"],
    }
    assert torch.equal(teacher.layer1.conv.weight, trained.layer1.conv.weight)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        SingleTeacherDistill(
            DigitsSmallCNN(width=4), DigitsCNN(width=8), kd_distiller(), teacher_ckpt=tmp_path / "nope.pt"
        )


def test_algorithm_builds_from_nested_config_dicts():
    algo = ALGORITHMS.build(
        {
            "type": "SingleTeacherDistill",
            "student": {"type": "DigitsMLP"},
            "teacher": {"type": "DigitsSmallCNN"},
            "distiller": kd_distiller("fc2", "fc"),
        }
    )
    assert isinstance(algo, SingleTeacherDistill) and isinstance(algo.student, DigitsMLP)
    totals, _ = train_steps(algo, steps=6)
    assert totals[-1] < totals[0]


def test_indices_and_extra_values_reach_from_data_sources():
    class IdxLoss(nn.Module):
        def forward(self, preds_S, idx, weight):
            return preds_S.sum() * 0 + idx.float().mean() * weight

    cfg = kd_distiller("fc2", "fc")
    cfg["distill_losses"]["idx"] = IdxLoss()
    cfg["loss_forward_mappings"]["idx"] = {
        "preds_S": {"from_student": True, "recorder": "logits"},
        "idx": {"from_data": "indices"},
        "weight": {"from_data": "w"},
    }
    algo = SingleTeacherDistill(DigitsMLP(), DigitsSmallCNN(), cfg)
    losses = algo.loss(*batch(4), indices=torch.tensor([0, 2, 4, 6]), w=2.0)
    assert losses["distill.loss_idx"].item() == pytest.approx(6.0)


# -- SelfDistill ---------------------------------------------------------------------------------
def self_distiller():
    """Deep supervision: an auxiliary head on layer2 learns from the final logits."""
    return {
        "student_recorders": {"l2": {"type": "ModuleOutputs", "source": "layer2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "connectors": {
            "aux": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)),
        },
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": 2}},
        "loss_forward_mappings": {
            "kl": {
                "preds_S": {"from_student": True, "recorder": "l2", "connector": "aux"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
    }


def test_self_distill_trains_aux_head_and_model_and_detaches_the_teacher_side():
    algo = SelfDistill(DigitsSmallCNN(width=4), self_distiller())
    losses = algo.loss(*batch())
    assert set(losses) == {"student.loss", "distill.loss_kl"}
    losses["distill.loss_kl"].backward()
    assert all(p.grad is not None for p in algo.distiller.connectors["aux"].parameters())
    assert algo.student.layer1.conv.weight.grad is not None  # through the student side
    assert algo.student.fc.weight.grad is None  # teacher side detached
    totals, losses = train_steps(SelfDistill(DigitsSmallCNN(width=4), self_distiller()), steps=10)
    assert totals[-1] < totals[0]


def test_self_distill_rejects_deliveries():
    cfg = self_distiller()
    cfg["distill_deliveries"] = {
        "d": {"type": "FunctionOutputsDelivery", "max_keep_data": 1, "func_path": "torch.rand"}
    }
    with pytest.raises(ValueError, match="remove distill_deliveries"):
        SelfDistill(DigitsSmallCNN(width=4), cfg)


# -- MultiTeacherDistill --------------------------------------------------------------------------
def test_multi_teacher_weights_losses_and_trains_only_the_student():
    teachers = {"big": DigitsCNN(width=8), "small": DigitsSmallCNN(width=4)}
    frozen = {n: copy.deepcopy(t.state_dict()) for n, t in teachers.items()}
    algo = MultiTeacherDistill(
        DigitsMLP(),
        teachers,
        {"big": kd_distiller("fc2"), "small": kd_distiller("fc2")},
        weights={"big": 0.75, "small": 0.25},
    )
    losses = algo.loss(*batch())
    assert set(losses) == {"student.loss", "distill.big.loss_kl", "distill.small.loss_kl"}
    # each term equals weight * the plain KL to that teacher
    x, y = batch()
    losses = algo.loss(x, y)
    with torch.no_grad():
        s = algo.student(x)
        from torchpare.distill.losses import KLDivergence

        for name, w in (("big", 0.75), ("small", 0.25)):
            expected = w * KLDivergence(tau=4)(s, teachers[name](x))
            torch.testing.assert_close(losses[f"distill.{name}.loss_kl"].detach(), expected)
    totals, _ = train_steps(algo, steps=10)
    assert totals[-1] < totals[0]
    for n, t in teachers.items():
        assert all(torch.equal(v, t.state_dict()[k]) for k, v in frozen[n].items())
        assert all(p.grad is None for p in t.parameters())
    assert {id(p) for p in algo.trainable_parameters()} == {id(p) for p in algo.student.parameters()}


def test_multi_teacher_rejects_mismatched_names():
    with pytest.raises(ValueError, match=r"weights has key 'bgi'.*did you mean 'big'"):
        MultiTeacherDistill(
            DigitsMLP(), {"big": DigitsCNN(width=4)}, {"big": kd_distiller("fc2")}, weights={"bgi": 1.0}
        )
    with pytest.raises(ValueError, match=r"teacher 'big' has no entry in distillers"):
        MultiTeacherDistill(DigitsMLP(), {"big": DigitsCNN(width=4)}, {})


# -- OnlineDistill --------------------------------------------------------------------------------
def test_online_distill_students_teach_each_other_and_all_train():
    algo = OnlineDistill({"a": DigitsMLP(), "b": DigitsMLP(hidden=24)}, kd_distiller("fc2", "fc2", tau=1.0))
    losses = algo.loss(*batch())
    assert set(losses) == {"student.a.loss", "student.b.loss", "distill.a<-b.loss_kl", "distill.b<-a.loss_kl"}
    losses["distill.a<-b.loss_kl"].backward()
    # a learns from b's detached logits: only a gets gradients from its KL term
    assert algo.students["a"].fc2.weight.grad is not None
    assert algo.students["b"].fc2.weight.grad is None
    ids = {id(p) for p in algo.trainable_parameters()}
    assert {id(p) for m in algo.students.values() for p in m.parameters()} == ids
    totals, _ = train_steps(
        OnlineDistill({"a": DigitsMLP(), "b": DigitsMLP(hidden=24)}, kd_distiller("fc2", "fc2", tau=1.0)),
        steps=10,
    )
    assert totals[-1] < totals[0]


def test_online_distill_with_three_students_and_explicit_pairs():
    students = {"a": DigitsMLP(), "b": DigitsMLP(), "c": DigitsMLP()}
    algo = OnlineDistill(students, kd_distiller("fc2", "fc2"))
    assert sum(k.startswith("distill.") for k in algo.loss(*batch())) == 6
    algo = OnlineDistill(students, kd_distiller("fc2", "fc2"), pairs=[("a", "b"), ("a", "c")])
    assert sorted(k for k in algo.loss(*batch()) if k.startswith("distill.")) == [
        "distill.a<-b.loss_kl",
        "distill.a<-c.loss_kl",
    ]
    with pytest.raises(ValueError, match=r"unknown student 'd'"):
        OnlineDistill(students, kd_distiller("fc2", "fc2"), pairs=[("a", "d")])
    with pytest.raises(ValueError, match="at least two students"):
        OnlineDistill({"a": DigitsMLP()}, kd_distiller("fc2", "fc2"))


def test_deliveries_replay_the_teacher_function_outputs_on_the_student():
    import random

    original = random.random

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) + random.random()

    cfg = kd_distiller(
        distill_deliveries={
            "rnd": {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.random"}
        },
        release_after_losses=False,  # the records are read after the step
    )
    student, teacher = Noisy(), Noisy()
    algo = SingleTeacherDistill(student, teacher, cfg)
    x = torch.randn(2, 4)
    algo.loss(x, torch.tensor([0, 1]))
    d = algo.distiller
    with torch.no_grad():
        t_offset = d.get_record("logits", False) - teacher.fc(x)
        s_offset = d.get_record("logits", True) - student.fc(x)
    torch.testing.assert_close(s_offset, t_offset)
    assert random.random is original  # the patch is gone after the step


def test_to_and_dtype_changes_reach_the_frozen_teacher_and_eval_keeps_it_frozen():
    teacher = DigitsCNN(width=4)
    algo = SingleTeacherDistill(DigitsSmallCNN(width=4), teacher, kd_distiller()).double()
    assert teacher.fc.weight.dtype == torch.float64 and algo.student.fc.weight.dtype == torch.float64
    losses = algo.loss(torch.rand(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1]))
    assert losses["distill.loss_kl"].dtype == torch.float64
    algo.eval()
    algo.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_crd_reads_sample_indices_from_the_batch_and_its_heads_train():
    from torchpare.datasets import digits_loaders, load_digits_split

    split = load_digits_split(seed=0)
    train, _, _ = digits_loaders(split, batch_size=16, seed=0, with_indices=True)
    cfg = {
        "student_recorders": {"feat": {"type": "ModuleOutputs", "source": "fc1"}},
        "teacher_recorders": {"feat": {"type": "ModuleOutputs", "source": "pool"}},
        "distill_losses": {
            "crd": {"type": "CRDLoss", "num_data": len(split.y_train), "s_dim": 16, "t_dim": 32, "nce_k": 64}
        },
        "loss_forward_mappings": {
            "crd": {
                "s_feature": {"from_student": True, "recorder": "feat"},
                "t_feature": {"from_student": False, "recorder": "feat"},
                "idx": {"from_data": "indices"},
            }
        },
    }
    algo = SingleTeacherDistill(DigitsMLP(), DigitsSmallCNN(width=8), cfg)
    crd_params = {id(p) for p in algo.distiller.distill_losses["crd"].parameters()}
    assert crd_params and crd_params <= {id(p) for p in algo.trainable_parameters()}
    x, y, idx = next(iter(train))
    with pytest.raises(KeyError, match=r"'idx' reads \{'from_data': 'indices'\}"):
        algo.loss(x, y)
    losses = algo.loss(x, y, indices=idx)
    assert torch.isfinite(losses["distill.loss_crd"])
    algo.total_loss(losses).backward()
    assert any(p.grad is not None for p in algo.distiller.distill_losses["crd"].parameters())
