"""ConfigurableDistiller: construction-time validation, loss computation, data sources, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpare.distill.connectors import LinearConnector
from torchpare.distill.distiller import ConfigurableDistiller, DistillerConfigError
from torchpare.distill.losses import KLDivergence
from torchpare.registry import DISTILLERS


class PairLoss(nn.Module):
    """A feature loss with a required extra input and one with a default."""

    def forward(self, s_feature, t_feature, gt_labels, scale=1.0):
        return scale * (s_feature - t_feature).pow(2).mean() + 0.0 * gt_labels.float().sum()


class Net(nn.Module):
    def __init__(self, hidden: int = 6) -> None:
        super().__init__()
        self.body = nn.Linear(4, hidden)
        self.fc = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.body(x)))


def kd_cfg(**overrides):
    cfg = {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kd": {"type": "KLDivergence", "tau": 4}},
        "loss_forward_mappings": {
            "kd": {
                "preds_S": {"from_student": True, "recorder": "logits"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
    }
    cfg.update(overrides)
    return cfg


def run_pair(d: ConfigurableDistiller, student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> None:
    with d.teacher_recorders, torch.no_grad():
        teacher(x)
    with d.student_recorders:
        student(x)


# -- validation: one test per error kind --------------------------------------------------------
def test_unknown_loss_in_mappings_names_loss_and_lists_valid_ones():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"] = {"kdd": cfg["loss_forward_mappings"]["kd"]}
    with pytest.raises(DistillerConfigError, match=r"'kdd'.*did you mean 'kd'"):
        ConfigurableDistiller(**cfg)


def test_loss_with_mapping_for_unknown_loss_names_it():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["other"] = cfg["loss_forward_mappings"]["kd"]
    with pytest.raises(DistillerConfigError, match=r"loss 'other'.*Valid losses: kd"):
        ConfigurableDistiller(**cfg)


def test_argument_not_in_forward_signature_names_argument_and_suggests():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_s"] = cfg["loss_forward_mappings"]["kd"].pop("preds_S")
    with pytest.raises(
        DistillerConfigError, match=r"loss 'kd'.*argument 'preds_s'; did you mean .*'preds_S'"
    ):
        ConfigurableDistiller(**cfg)


def test_required_argument_unmapped_is_rejected_before_training():
    cfg = kd_cfg()
    del cfg["loss_forward_mappings"]["kd"]["preds_T"]
    with pytest.raises(DistillerConfigError, match=r"loss 'kd'.*required forward argument\(s\) 'preds_T'"):
        ConfigurableDistiller(**cfg)


def test_loss_without_any_mapping_entry_is_rejected():
    cfg = kd_cfg(loss_forward_mappings={})
    with pytest.raises(DistillerConfigError, match=r"loss 'kd' has no entry.*'preds_S', 'preds_T'"):
        ConfigurableDistiller(**cfg)


def test_argument_with_default_may_stay_unmapped():
    d = ConfigurableDistiller(
        student_recorders={"f": {"type": "ModuleOutputs", "source": "body"}},
        teacher_recorders={"f": {"type": "ModuleOutputs", "source": "body"}},
        distill_losses={"pair": PairLoss()},
        loss_forward_mappings={
            "pair": {
                "s_feature": {"from_student": True, "recorder": "f"},
                "t_feature": {"from_student": False, "recorder": "f"},
                "gt_labels": {"from_data": "targets"},
            }
        },
    )
    assert "scale" not in d.loss_forward_mappings["pair"]


def test_unknown_recorder_names_recorder_and_side():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_T"]["recorder"] = "logit"
    with pytest.raises(
        DistillerConfigError, match=r"'preds_T': recorder 'logit' is not in teacher_recorders"
    ):
        ConfigurableDistiller(**cfg)


def test_recorder_on_the_other_side_says_to_flip_from_student():
    cfg = kd_cfg(student_recorders={"s_logits": {"type": "ModuleOutputs", "source": "fc"}})
    cfg["loss_forward_mappings"]["kd"]["preds_S"]["recorder"] = "s_logits"
    cfg["loss_forward_mappings"]["kd"]["preds_T"]["recorder"] = "s_logits"
    with pytest.raises(
        DistillerConfigError, match=r"recorder 's_logits'.*student recorder.*'from_student': True"
    ):
        ConfigurableDistiller(**cfg)


def test_student_argument_mapped_from_teacher_side_is_rejected():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_S"]["from_student"] = False
    with pytest.raises(
        DistillerConfigError, match=r"'preds_S' is the student side.*set 'from_student': True"
    ):
        ConfigurableDistiller(**cfg)


def test_unknown_connector_names_connector_and_lists_valid_ones():
    cfg = kd_cfg(connectors={"proj": {"type": "LinearConnector", "in_features": 3, "out_features": 3}})
    cfg["loss_forward_mappings"]["kd"]["preds_S"]["connector"] = "prj"
    with pytest.raises(
        DistillerConfigError, match=r"connector 'prj'.*did you mean 'proj'.*Valid connectors: proj"
    ):
        ConfigurableDistiller(**cfg)


def test_unknown_source_key_is_named():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_S"] = {"from_student": True, "recoder": "logits"}
    with pytest.raises(DistillerConfigError, match=r"unknown key 'recoder'; did you mean 'recorder'"):
        ConfigurableDistiller(**cfg)


def test_missing_from_student_key_is_named():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_S"] = {"recorder": "logits"}
    with pytest.raises(DistillerConfigError, match=r"'preds_S': missing key 'from_student'"):
        ConfigurableDistiller(**cfg)


def test_from_data_source_with_recorder_keys_is_rejected():
    cfg = kd_cfg()
    cfg["loss_forward_mappings"]["kd"]["preds_T"] = {"from_data": "targets", "recorder": "logits"}
    with pytest.raises(
        DistillerConfigError, match=r"'preds_T': unknown key 'recorder' in a 'from_data' source"
    ):
        ConfigurableDistiller(**cfg)


def test_unknown_recorder_type_fails_in_constructor():
    cfg = kd_cfg(student_recorders={"logits": {"type": "ModuleOutputz", "source": "fc"}})
    with pytest.raises(KeyError, match="ModuleOutputz"):
        ConfigurableDistiller(**cfg)


# -- behaviour ----------------------------------------------------------------------------------
def test_compute_distill_losses_matches_the_loss_on_recorded_logits():
    d = ConfigurableDistiller(**kd_cfg())
    student, teacher = Net(), Net()
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    x = torch.randn(5, 4)
    run_pair(d, student, teacher, x)
    losses = d.compute_distill_losses()
    expected = KLDivergence(tau=4)(student(x), teacher(x))
    assert list(losses) == ["loss_kd"]
    torch.testing.assert_close(losses["loss_kd"], expected, atol=1e-6, rtol=1e-5)


def test_from_data_feeds_batch_values_and_missing_key_is_named():
    d = ConfigurableDistiller(
        student_recorders={"f": {"type": "ModuleOutputs", "source": "body"}},
        teacher_recorders={"f": {"type": "ModuleOutputs", "source": "body"}},
        distill_losses={"pair": PairLoss()},
        loss_forward_mappings={
            "pair": {
                "s_feature": {"from_student": True, "recorder": "f"},
                "t_feature": {"from_student": False, "recorder": "f"},
                "gt_labels": {"from_data": "targets"},
            }
        },
    )
    student, teacher = Net(), Net()
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    run_pair(d, student, teacher, torch.randn(3, 4))
    assert torch.isfinite(d.compute_distill_losses({"targets": torch.tensor([0, 1, 2])})["loss_pair"])
    with pytest.raises(KeyError, match=r"'gt_labels' reads \{'from_data': 'targets'\}.*given: indices"):
        d.compute_distill_losses({"indices": torch.arange(3)})


def test_connectors_and_losses_are_submodules_saved_with_the_distiller():
    cfg = kd_cfg(connectors={"proj": LinearConnector(3, 3)})
    cfg["loss_forward_mappings"]["kd"]["preds_S"]["connector"] = "proj"
    d = ConfigurableDistiller(**cfg)
    assert isinstance(d.connectors, nn.ModuleDict) and isinstance(d.distill_losses, nn.ModuleDict)
    conn_params = {id(p) for p in d.connectors["proj"].parameters()}
    assert conn_params and conn_params <= {id(p) for p in d.parameters()}
    assert any(k.startswith("connectors.proj.") for k in d.state_dict())
    student, teacher = Net(), Net()
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    # The recorded models are not part of the distiller's state.
    assert not any("body" in k or k.startswith("fc") for k in d.state_dict())
    run_pair(d, student, teacher, torch.randn(4, 4))
    d.compute_distill_losses()["loss_kd"].backward()
    assert all(p.grad is not None for p in d.connectors["proj"].parameters())
    assert student.fc.weight.grad is not None and teacher.fc.weight.grad is None


def test_string_data_idx_reads_a_field_of_a_dict_output():
    class DictNet(Net):
        def forward(self, x):
            return {"logits": super().forward(x)}

    cfg = kd_cfg(
        student_recorders={"out": {"type": "ModuleOutputs", "source": ""}},
        teacher_recorders={"out": {"type": "ModuleOutputs", "source": ""}},
    )
    for side in ("preds_S", "preds_T"):
        cfg["loss_forward_mappings"]["kd"][side].update(recorder="out", data_idx="logits")
    d = ConfigurableDistiller(**cfg)
    student, teacher = DictNet(), DictNet()
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    x = torch.randn(2, 4)
    run_pair(d, student, teacher, x)
    expected = KLDivergence(tau=4)(student(x)["logits"], teacher(x)["logits"])
    torch.testing.assert_close(d.compute_distill_losses()["loss_kd"], expected)


def test_shared_connector_input_is_computed_once_per_step():
    calls = []

    class Counting(nn.Identity):
        def forward(self, x):
            calls.append(1)
            return x

    cfg = kd_cfg(
        connectors={"c": Counting()},
        distill_losses={"a": KLDivergence(tau=1), "b": KLDivergence(tau=2)},
    )
    mapping = {
        "preds_S": {"from_student": True, "recorder": "logits", "connector": "c"},
        "preds_T": {"from_student": False, "recorder": "logits"},
    }
    cfg["loss_forward_mappings"] = {"a": mapping, "b": mapping}
    d = ConfigurableDistiller(**cfg)
    student, teacher = Net(), Net()
    d.prepare_from_student(student)
    d.prepare_from_teacher(teacher)
    run_pair(d, student, teacher, torch.randn(2, 4))
    assert sorted(d.compute_distill_losses()) == ["loss_a", "loss_b"]
    assert len(calls) == 1


def test_distiller_builds_from_registry_dict():
    d = DISTILLERS.build({"type": "ConfigurableDistiller", **kd_cfg()})
    assert isinstance(d, ConfigurableDistiller)
    assert isinstance(d.distill_losses["kd"], KLDivergence) and d.distill_losses["kd"].tau == 4
