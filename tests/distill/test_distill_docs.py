"""The YAML examples in docs/distill.md build and run (so the user doc cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

import torchpare.distill.algorithms  # noqa: F401  (registers OFDDistiller in DISTILLERS)
from torchpare.distill.algorithms import OFDDistiller, SingleTeacherDistill
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsSmallCNN

DOC = Path(__file__).resolve().parents[2] / "docs" / "distill.md"


def yaml_blocks() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def test_kd_yaml_example_builds_and_trains_a_step():
    cfg = yaml_blocks()[0]
    algo = ALGORITHMS.build(cfg)
    assert isinstance(algo, SingleTeacherDistill)
    losses = algo.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"student.loss", "distill.loss_kd"}
    algo.total_loss(losses).backward()


def test_ofd_yaml_example_builds_with_zoo_models():
    cfg = yaml_blocks()[1]["distiller"]
    algo = SingleTeacherDistill(DigitsSmallCNN(width=8), DigitsCNN(width=32), cfg)
    assert isinstance(algo.distiller, OFDDistiller)
    losses = algo.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(losses["distill.loss_ofd_l2"])
