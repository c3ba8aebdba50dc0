"""Mapping / distill: the short Python API for hand-written training loops."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchpare.distill.mapping import DistillModel, Mapping, MappingEntry, distill


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.layer1 = nn.Linear(3, width)
        self.layer2 = nn.Linear(width, width)
        self.layer3 = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.fc = nn.Linear(width, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return self.bn(self.fc(self.layer3(self.layer2(self.layer1(x))))) * scale


class Twice(nn.Module):
    """Calls ``block`` twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(3, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.block(x))))


class Raising(Net):
    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        self.layer1(x)
        raise RuntimeError("boom in forward")


def _no_hooks(*models: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for model in models for m in model.modules())


@pytest.fixture
def pair() -> tuple[Net, Net]:
    return Net(4), Net(8)


def test_payload_round_trip_by_module_by_name_and_mixed(pair):
    student, teacher = pair
    kl = nn.KLDivLoss()
    mapping = Mapping(student, teacher)
    mapping.add(student.layer1, teacher.layer1)
    mapping.add("layer2", "layer2", payload={"weight": 0.5})
    mapping.add(student.layer3, "layer3")
    mapping.add(student.fc, teacher.fc, payload=kl)
    assert list(mapping) == [
        MappingEntry("layer1", "layer1", None),
        MappingEntry("layer2", "layer2", {"weight": 0.5}),
        MappingEntry("layer3", "layer3", None),
        MappingEntry("fc", "fc", kl),
    ]
    assert len(mapping) == 4
    assert mapping.payload("layer2") == {"weight": 0.5}
    assert mapping.payload(student.fc) is kl
    assert mapping.payload(student.layer3, "layer3") is None


def test_add_returns_the_mapping_so_calls_chain(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher).add("layer1", "layer1").add("fc", "fc", payload=1)
    assert [e.student for e in mapping] == ["layer1", "fc"]


def test_add_with_unknown_name_raises_naming_it_and_the_closest(pair):
    student, teacher = pair
    with pytest.raises(KeyError, match=r"no student module 'layr3'.*did you mean 'layer3'"):
        Mapping(student, teacher).add("layr3", "layer3")
    with pytest.raises(KeyError, match=r"no teacher module 'fcc'.*did you mean 'fc'"):
        Mapping(student, teacher).add("fc", "fcc")


def test_add_with_module_outside_its_model_raises(pair):
    student, teacher = pair
    stranger = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"student module Linear is not inside the student model Net"):
        Mapping(student, teacher).add(stranger, "fc")
    with pytest.raises(ValueError, match=r"belongs to the student: swapped arguments"):
        Mapping(student, teacher).add(student.fc, student.fc)


def test_add_rejects_other_types(pair):
    student, teacher = pair
    with pytest.raises(TypeError, match=r"teacher module must be an nn.Module or a dotted name, got int"):
        Mapping(student, teacher).add("fc", 3)
    with pytest.raises(TypeError, match=r"the teacher must be an nn.Module"):
        Mapping(student, "teacher")


def test_payload_of_unmapped_or_ambiguous_module_raises(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher).add("layer1", "layer1").add("layer1", "layer2", payload=2)
    with pytest.raises(KeyError, match=r"no entry for student module 'fc'"):
        mapping.payload("fc")
    with pytest.raises(KeyError, match=r"2 entries for student module 'layer1'.*pass teacher_module"):
        mapping.payload("layer1")
    assert mapping.payload("layer1", teacher.layer2) == 2


def test_distill_refuses_a_mapping_made_for_other_models(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher).add("fc", "fc")
    with pytest.raises(ValueError, match=r"made for other models \(student and teacher swapped\)"):
        distill(student=teacher, teacher=student, mapping=mapping)
    with pytest.raises(ValueError, match=r"made for other models"):
        distill(student=copy.deepcopy(student), teacher=teacher, mapping=mapping)
    with pytest.raises(TypeError, match=r"mapping must be a Mapping"):
        distill(student=student, teacher=teacher, mapping={"fc": "fc"})


def test_distill_arguments_are_keyword_only(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher)
    with pytest.raises(TypeError):
        distill(student, teacher, mapping)  # type: ignore[misc]


def test_triples_come_in_mapping_order_with_the_modules_outputs(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher).add("fc", "fc", payload="p_fc").add("layer1", "layer1", payload="p_1")
    x = torch.randn(5, 3)
    with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        triples = distill_model(x, scale=2.0)
        student.train()
        expected_s_fc = student.fc(student.layer3(student.layer2(student.layer1(x))))
        expected_t_1 = teacher.layer1(x)
    assert [p for _, _, p in triples] == ["p_fc", "p_1"]
    (s_fc, t_fc, _), (s_1, t_1, _) = triples
    torch.testing.assert_close(s_fc, expected_s_fc, rtol=0, atol=1e-6)
    torch.testing.assert_close(t_1, expected_t_1, rtol=0, atol=1e-6)
    assert s_fc.shape == (5, 2) and t_fc.shape == (5, 2) and s_1.shape == (5, 4) and t_1.shape == (5, 8)
    assert s_fc.requires_grad and not t_fc.requires_grad
    teacher.eval()
    torch.testing.assert_close(distill_model.teacher_output, teacher(x, scale=2.0), rtol=0, atol=1e-6)
    assert distill_model.student_output.shape == (5, 2) and distill_model.student_output.requires_grad


def test_teacher_runs_in_eval_inside_and_its_mode_is_restored_after(pair):
    student, teacher = pair
    teacher.train()
    running = teacher.bn.running_mean.clone()
    mapping = Mapping(student, teacher).add("fc", "fc")
    with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        assert not teacher.training
        teacher.train()  # even if the user flips it back, the teacher forward runs in eval
        distill_model(torch.randn(4, 3))
    assert teacher.training
    torch.testing.assert_close(teacher.bn.running_mean, running, rtol=0, atol=0)


def test_teacher_no_grad_false_keeps_the_teacher_graph(pair):
    student, teacher = pair
    mapping = Mapping(student, teacher).add("fc", "fc")
    with distill(student=student, teacher=teacher, mapping=mapping, teacher_no_grad=False) as distill_model:
        ((_, t_out, _),) = distill_model(torch.randn(2, 3))
    assert t_out.requires_grad


def test_module_called_twice_yields_one_triple_per_call_in_call_order():
    student, teacher = Twice(), Twice()
    mapping = Mapping(student, teacher).add("block", "block", payload="b")
    x = torch.randn(2, 3)
    with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        triples = distill_model(x)
    assert len(triples) == 2
    first = student.block(x)
    second = student.block(torch.relu(first))
    torch.testing.assert_close(triples[0][0], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(triples[1][0], second, rtol=0, atol=1e-6)


def test_mapped_module_that_does_not_run_raises_naming_it(pair):
    student, teacher = pair
    student.unused = nn.Linear(1, 1)
    mapping = Mapping(student, teacher).add("unused", "fc")
    with (
        pytest.raises(ValueError, match=r"student module 'unused' did not run"),
        distill(student=student, teacher=teacher, mapping=mapping) as distill_model,
    ):
        distill_model(torch.randn(2, 3))
    assert _no_hooks(student, teacher)


def test_hooks_are_gone_after_an_exception_in_the_block_and_models_work(pair):
    student, teacher = pair
    teacher.train()
    mapping = Mapping(student, teacher).add("layer1", "layer1").add("fc", "fc")
    with (
        pytest.raises(KeyError, match="user error"),
        distill(student=student, teacher=teacher, mapping=mapping) as dm,
    ):
        dm(torch.randn(2, 3))
        assert _no_hooks(student, teacher)  # recorders hook a side only while it runs
        raise KeyError("user error")
    assert _no_hooks(student, teacher)
    assert teacher.training
    assert student(torch.randn(2, 3)).shape == (2, 2)


def test_hooks_are_gone_after_a_forward_that_raises(pair):
    student, teacher = Raising(4), Net(8)
    mapping = Mapping(student, teacher).add("layer1", "layer1")
    with (
        pytest.raises(RuntimeError, match="boom in forward"),
        distill(student=student, teacher=teacher, mapping=mapping) as dm,
    ):
        dm(torch.randn(2, 3))
    assert _no_hooks(student, teacher)


def test_calling_outside_the_block_raises(pair):
    student, teacher = pair
    dm = distill(student=student, teacher=teacher, mapping=Mapping(student, teacher))
    assert isinstance(dm, DistillModel)
    with pytest.raises(RuntimeError, match="outside its `with distill"):
        dm(torch.randn(2, 3))


def test_training_loop_on_digits_lowers_the_loss_and_leaves_the_teacher_unchanged():
    from torchpare.datasets import load_digits_split
    from torchpare.zoo import DigitsCNN, DigitsSmallCNN

    split = load_digits_split(seed=0)
    teacher, student = DigitsCNN(width=8), DigitsSmallCNN(width=4)
    # a quickly trained teacher makes its logits worth matching
    opt_t = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for step in range(30):
        idx = torch.arange(step * 32, step * 32 + 32) % len(split.x_train)
        opt_t.zero_grad()
        F.cross_entropy(teacher(split.x_train[idx]), split.y_train[idx]).backward()
        opt_t.step()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    connector = nn.Conv2d(16, 32, 1)  # student layer3 (4w=16) -> teacher layer3 (4w=32)
    mapping = Mapping(student, teacher)
    mapping.add(student.layer3, teacher.layer3, payload=lambda s, t: F.mse_loss(connector(s), t))
    mapping.add(
        "fc",
        "fc",
        payload=lambda s, t: (
            F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
        ),
    )
    optimizer = torch.optim.Adam([*student.parameters(), *connector.parameters()], lr=1e-2)
    losses = []
    with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        for _epoch in range(3):
            for start in range(0, 640, 64):
                x = split.x_train[start : start + 64]
                y = split.y_train[start : start + 64]
                triples = distill_model(x)
                loss = F.cross_entropy(distill_model.student_output, y)  # the task loss
                for s_out, t_out, payload in triples:
                    loss = loss + payload(s_out, t_out)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, losses
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"teacher {key} changed")
    assert _no_hooks(student, teacher)


def test_short_api_doc_examples_run(tmp_path, capsys):
    import re
    import runpy
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "short_api.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 3
    script = tmp_path / "short_api.py"
    script.write_text("\n".join(blocks))
    namespace = runpy.run_path(str(script))
    assert namespace["recovery"].layers == ["layer1.conv", "layer2.conv"]
    assert "{'weight': 0.5}" in capsys.readouterr().out


def test_teacher_with_mixed_modes_gets_each_module_mode_back(pair):
    student, teacher = pair
    teacher.train()
    teacher.bn.eval()  # e.g. frozen norms in a training model
    mapping = Mapping(student, teacher).add("fc", "fc")
    with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        distill_model(torch.randn(3, 3))
        assert not any(m.training for m in teacher.modules())
    assert teacher.training and teacher.fc.training and not teacher.bn.training
