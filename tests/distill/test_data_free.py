"""Data-free distillation: generators, DAFL and the adversarial variant, from Python, YAML and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchpare.distill.algorithms import AdversarialDataFreeDistill, DAFLDataFreeDistill
from torchpare.distill.generators import GENERATORS, DAFLGenerator
from torchpare.engine.config import load_config, validate_config
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsMLP

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GEN = {"type": "DAFLGenerator", "img_size": 8, "latent_dim": 8, "hidden_channels": 8}


def _kd(args: tuple[str, str] = ("preds_S", "preds_T"), loss: dict | None = None) -> dict:
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_losses": {"kd": loss or {"type": "KLDivergence", "tau": 4}},
        "loss_forward_mappings": {"kd": {args[0]: {"from_student": True, "recorder": "logits"},
                                         args[1]: {"from_student": False, "recorder": "logits"}}},
    }


def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_generators_are_registered_and_check_their_sizes():
    assert GENERATORS.get("DAFL") is DAFLGenerator
    gen = GENERATORS.build(GEN)
    assert gen(batch_size=5).shape == (5, 1, 8, 8)
    with torch.no_grad():
        images = gen(batch_size=5)
    assert float(images.min()) >= 0 and float(images.max()) <= 1  # sigmoid: [0, 1]
    with pytest.raises(ValueError, match="divisible"):
        DAFLGenerator(img_size=6)
    with pytest.raises(ValueError, match=r"latent data must be \(N, 8\)"):
        gen(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="output must be one of"):
        DAFLGenerator(output="relu")


def test_data_free_algorithms_are_registered_under_mmrazor_names():
    assert ALGORITHMS.get("DAFL") is DAFLDataFreeDistill
    assert ALGORITHMS.get("DAFLDataFreeDistillation") is DAFLDataFreeDistill
    assert ALGORITHMS.get("DFAD") is AdversarialDataFreeDistill
    assert ALGORITHMS.get("ZSKT") is AdversarialDataFreeDistill


def test_dafl_generator_learns_from_the_teacher_only_and_the_student_from_kd_only():
    torch.manual_seed(0)
    algo = DAFLDataFreeDistill(DigitsMLP(), DigitsCNN(width=4), GEN, _kd(), batch_size=8, bn_weight=1.0)
    losses = algo.loss(None)
    assert sorted(losses) == ["distill.loss_kd", "generator.loss_activation", "generator.loss_bn",
                              "generator.loss_entropy", "generator.loss_onehot"]
    losses["distill.loss_kd"].backward(retain_graph=True)
    assert all(g is None for g in _grads(algo.generator))  # the student's loss never reaches the generator
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(algo.student))
    algo.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if k.startswith("generator.")).backward()
    assert all(g is None for g in _grads(algo.student))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(algo.generator))
    assert all(not p.requires_grad for p in algo.teacher.parameters())  # frozen, not in the optimiser
    assert not any(n.startswith("teacher") for n, _ in algo.named_parameters())


def test_data_free_loss_never_reads_the_real_batch():
    class Poison:
        def __getattr__(self, name):
            raise AssertionError(f"the real batch was read ({name})")

    algo = DAFLDataFreeDistill(DigitsMLP(), DigitsCNN(width=4), GEN, _kd(), batch_size=4)
    algo.loss(Poison(), Poison())
    adv = AdversarialDataFreeDistill(DigitsMLP(), DigitsCNN(width=4), GEN, _kd(), batch_size=4)
    adv.loss(Poison(), Poison())


def test_adversarial_generator_gets_the_reversed_gradient_of_the_students_loss():
    torch.manual_seed(0)
    student, teacher = DigitsMLP(), DigitsCNN(width=4)
    algo = AdversarialDataFreeDistill(student, teacher, GEN, _kd(("s_feature", "t_feature"), {"type": "L1Loss"}),
                                      batch_size=6, adversarial_weight=0.5)
    algo.generator.eval()  # same images in both passes (no batch statistics)
    torch.manual_seed(1)
    algo.total_loss(algo.loss(None)).backward()
    got_gen = [p.grad.clone() for p in algo.generator.parameters()]
    got_student = [p.grad.clone() for p in student.parameters()]
    algo.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same latent draw, without the reversal
    x = algo.generator(batch_size=6)
    (student(x) - teacher(x).detach()).abs().mean().backward()  # L1Loss detaches the teacher
    for got, want in zip(got_gen, [p.grad for p in algo.generator.parameters()], strict=True):
        torch.testing.assert_close(got, -0.5 * want)
    for got, want in zip(got_student, [p.grad for p in student.parameters()], strict=True):
        torch.testing.assert_close(got, want)


def test_data_free_config_validates_and_builds_through_the_engine(tmp_path):
    from torchpare.engine.runner import build_algorithm, build_model

    cfg = load_config(CONFIGS / "digits_data_free.yaml")
    ckpt = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=32).state_dict(), ckpt)
    cfg["teacher"]["checkpoint"] = str(ckpt)
    validate_config(cfg, "distill")
    algo = build_algorithm(cfg, build_model(cfg["model"]))
    assert isinstance(algo, DAFLDataFreeDistill) and algo.batch_size == 64
    assert "generator.loss_bn" in algo.loss(None)


def test_adversarial_config_validates_and_builds(tmp_path):
    from torchpare.engine.runner import build_algorithm, build_model

    cfg = load_config(CONFIGS / "digits_dfad.yaml")
    ckpt = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=32).state_dict(), ckpt)
    cfg["teacher"]["checkpoint"] = str(ckpt)
    validate_config(cfg, "distill")
    algo = build_algorithm(cfg, build_model(cfg["model"]))
    assert isinstance(algo, AdversarialDataFreeDistill) and sorted(algo.loss(None)) == ["distill.loss_l1"]


def test_data_free_distill_runs_from_the_cli_without_real_training_images(tmp_path):
    from torchpare.cli.main import main

    teacher = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=4).state_dict(), teacher)
    out = tmp_path / "run"
    rc = main(["distill", str(CONFIGS / "digits_data_free.yaml"), "--output", str(out), "--quiet",
               "--set", f"teacher.checkpoint={teacher}", "--set", "teacher.width=4",
               "--set", "schedule.max_steps=2", "--set", "schedule.epochs=1",
               "--set", "algorithm.batch_size=8"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["models"][0]["accuracy"] <= 1.0


@pytest.mark.slow
def test_dafl_student_beats_80_percent_on_digits_without_real_images():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from data_free_digits import load_digits_split, run, train_teacher

    from torchpare.engine.trainer import evaluate

    torch.set_num_threads(1)
    split = load_digits_split(0)
    teacher = train_teacher(split, 0)  # the benchmark's settings, seed 0 (docs/benchmarks.md: 0.872)
    student = run("dafl+bn", teacher, 0, steps=800, batch=64, lr=3e-3)
    test = torch.utils.data.TensorDataset(split.x_test, split.y_test)
    assert evaluate(student, test)["accuracy"] >= 0.8
