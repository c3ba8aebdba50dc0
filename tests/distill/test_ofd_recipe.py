"""The OFD recipe built entirely from config dicts: two feature stages + logits, weights 0.25/0.5/1.0."""

from __future__ import annotations

import torch
from torch import nn

from torchpare.distill.algorithms import OFDDistiller, SingleTeacherDistill
from torchpare.distill.connectors import ConvModuleConnector, OFDTeacherConnector, margin_from_bn
from torchpare.distill.losses import KLDivergence, OFDLoss
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN


def stage(name: str, s_ch: int, t_ch: int, weight: float):
    """Recorders, connectors, loss and mapping for one OFD feature stage (pre-ReLU BN outputs)."""
    return {
        "student_recorders": {name: {"type": "ModuleOutputs", "source": f"{name}.bn"}},
        "teacher_recorders": {name: {"type": "ModuleOutputs", "source": f"{name}.bn"}},
        "connectors": {
            f"{name}_s": {
                "type": "ConvModuleConnector",
                "in_channels": s_ch,
                "out_channels": t_ch,
                "norm": "BN",
            },
            f"{name}_t": {"type": "OFDTeacherConnector"},
        },
        "distill_losses": {f"ofd_{name}": {"type": "OFDLoss", "loss_weight": weight}},
        "loss_forward_mappings": {
            f"ofd_{name}": {
                "s_feature": {"from_student": True, "recorder": name, "connector": f"{name}_s"},
                "t_feature": {"from_student": False, "recorder": name, "connector": f"{name}_t"},
            }
        },
    }


def ofd_config():
    distiller = {
        "type": "OFDDistiller",
        "release_after_losses": False,  # a test reads the records after the step
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "connectors": {},
        "distill_losses": {"kd": {"type": "KLDivergence", "tau": 4, "loss_weight": 1.0}},
        "loss_forward_mappings": {
            "kd": {
                "preds_S": {"from_student": True, "recorder": "logits"},
                "preds_T": {"from_student": False, "recorder": "logits"},
            }
        },
    }
    # student DigitsSmallCNN(width=4): layer2/layer3 have 16 channels; teacher width 8: 32 channels
    for part in (stage("layer2", 16, 32, 0.25), stage("layer3", 16, 32, 0.5)):
        for key, value in part.items():
            distiller[key].update(value)
    return {
        "type": "SingleTeacherDistill",
        "student": {"type": "DigitsSmallCNN", "width": 4},
        "teacher": {"type": "DigitsCNN", "width": 8},
        "distiller": distiller,
    }


def randomise_bn(model: nn.Module) -> None:
    """Give the teacher BNs non-default affine params, as a trained teacher would have."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen)


def build(teacher_ckpt=None):
    cfg = ofd_config()
    if teacher_ckpt is not None:
        cfg["teacher_ckpt"] = teacher_ckpt
    return ALGORITHMS.build(cfg)


def test_ofd_recipe_builds_from_dicts_with_the_right_parts():
    algo = build()
    d = algo.distiller
    assert isinstance(algo, SingleTeacherDistill) and isinstance(d, OFDDistiller)
    assert isinstance(d.connectors["layer2_s"], ConvModuleConnector)
    assert isinstance(d.connectors["layer3_t"], OFDTeacherConnector)
    weights = {n: loss.loss_weight for n, loss in d.distill_losses.items()}
    assert weights == {"kd": 1.0, "ofd_layer2": 0.25, "ofd_layer3": 0.5}
    assert isinstance(d.distill_losses["ofd_layer2"], OFDLoss) and isinstance(
        d.distill_losses["kd"], KLDivergence
    )


def test_teacher_connectors_get_margins_from_the_teacher_bn_statistics(tmp_path):
    teacher = DigitsCNN(width=8)
    randomise_bn(teacher)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    algo = build(teacher_ckpt=str(path))
    for name in ("layer2", "layer3"):
        expected = margin_from_bn(getattr(algo.teacher, name).bn).reshape(1, -1, 1, 1)
        torch.testing.assert_close(algo.distiller.connectors[f"{name}_t"].margin, expected)
        assert bool((expected < 0).all())


def test_ofd_losses_are_weighted_and_training_reduces_them_with_grads_in_connectors(tmp_path):
    teacher = DigitsCNN(width=8)
    randomise_bn(teacher)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    algo = build(teacher_ckpt=str(path))
    algo.train()
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    losses = algo.loss(x, y)
    assert set(losses) == {
        "student.loss",
        "distill.loss_kd",
        "distill.loss_ofd_layer2",
        "distill.loss_ofd_layer3",
    }
    # the layer2 term is 0.25 x the unweighted partial L2 between the connected features
    d = algo.distiller
    s = d.get_record("layer2", True, connector="layer2_s")
    t = d.get_record("layer2", False, connector="layer2_t")
    torch.testing.assert_close(losses["distill.loss_ofd_layer2"], 0.25 * OFDLoss()(s, t))

    opt = torch.optim.SGD(algo.trainable_parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(15):
        opt.zero_grad()
        losses = algo.loss(x, y)
        feat = (losses["distill.loss_ofd_layer2"] + losses["distill.loss_ofd_layer3"]).item()
        first = feat if first is None else first
        algo.total_loss(losses).backward()
        for name in ("layer2_s", "layer3_s"):
            assert all(p.grad is not None for p in d.connectors[name].parameters())
        assert all(p.grad is None for p in algo.teacher.parameters())
        opt.step()
    assert feat < first
    # margins are buffers saved with the algorithm; the teacher itself is not in the state dict
    state = algo.state_dict()
    assert "distiller.connectors.layer2_t.margin" in state
    assert not any(k.startswith("teacher.") for k in state)
