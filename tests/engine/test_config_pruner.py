"""The ``pruner`` section is checked by ``prune()``'s own checks (``prune_config_errors``), once, with
the engine adding the key path; the CLI stops with exit 2 before a run folder exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from torchpare.cli.main import main
from torchpare.engine.config import ConfigError, validate_config
from torchpare.prune import prune
from torchpare.prune.budget import prune_config_errors
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _errors(pruner: object) -> list[str]:
    cfg = {"model": {"type": "DigitsCNN"}, "pruner": pruner}
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "prune")
    return info.value.errors


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        ({"target_flops_ratio": 1.5}, "pruner.target_flops_ratio: must be in (0, 1], got 1.5."),
        ({"target_params_ratio": 0}, "pruner.target_params_ratio: must be in (0, 1], got 0.0."),
        ({"target_flops_ratio": "half"}, "pruner.target_flops_ratio: must be in (0, 1], got half."),
        ({"target_flops_ratio": 0.5, "target_params_ratio": 0.5},
         "pruner: give exactly one of target_flops_ratio or target_params_ratio."),
        ({}, "pruner: give exactly one of target_flops_ratio or target_params_ratio."),
        ({"target_flops_ratio": 0.5, "iterative_steps": 0}, "pruner.iterative_steps: must be >= 1, got 0."),
        ({"target_flops_ratio": 0.5, "max_group_ratio": 1.0}, "pruner.max_group_ratio: must be in (0, 1), got 1.0."),
        ({"target_flops_ratio": 0.5, "round_to": 0}, "pruner.round_to: must be a positive int or None, got 0."),
        ({"target_flops_ratio": 0.5, "units": ["head", "fnn"]}, "pruner.units: unknown unit kind(s) ['fnn']"),
        ({"target_flops_ratio": 0.5, "importance": "l7"}, "pruner.importance: "),
        ({"target_flops_ratio": 0.5, "example_inputs": 1}, "pruner.example_inputs: filled in by the engine"),
        ("l1", "pruner: must be a mapping of prune() arguments, got str"),
    ],
)
def test_each_bad_pruner_value_is_reported_with_its_key_path(pruner: object, expected: str) -> None:
    errors = _errors(pruner)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_pruner_problem_is_reported_at_once() -> None:
    errors = _errors({"target_flops_ratio": 2, "iterative_steps": -1, "round_to": 2.5, "improtance": "l1"})
    keys = sorted(e.split(":", 1)[0] for e in errors)
    assert keys == ["pruner.improtance", "pruner.iterative_steps", "pruner.round_to", "pruner.target_flops_ratio"]
    assert "did you mean 'importance'" in next(e for e in errors if e.startswith("pruner.improtance"))


def test_a_valid_pruner_section_passes() -> None:
    cfg = {"model": {"type": "DigitsCNN"},
           "pruner": {"target_params_ratio": 0.5, "importance": {"type": "l2"}, "units": "channel"}}
    assert validate_config(cfg, "prune") is not None
    assert prune_config_errors(cfg["pruner"]) == []


def test_prune_raises_the_same_check_that_the_config_reports() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"^prune\(\): target_flops_ratio must be in \(0, 1\], got 1.5\.$"):
        prune(net, torch.randn(2, 4), target_flops_ratio=1.5)
    with pytest.raises(ValueError, match=r"^prune\(\): give exactly one of target_flops_ratio"):
        prune(net, torch.randn(2, 4))
    assert prune_config_errors({"target_flops_ratio": 1.5}) == [("target_flops_ratio", "must be in (0, 1], got 1.5.")]


def test_bad_pruner_value_exits_2_from_the_cli_before_the_run_folder_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=4).state_dict(), ckpt)
    out = tmp_path / "run"
    code = main(["prune", str(CONFIGS / "digits_prune.yaml"), "--output", str(out), "--quiet",
                 "--set", "model.width=4", "--set", f"model.checkpoint={ckpt}",
                 "--set", "pruner.target_flops_ratio=1.5", "--set", "pruner.iterative_steps=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pruner.target_flops_ratio: must be in (0, 1], got 1.5." in err
    assert "pruner.iterative_steps: must be >= 1, got 0." in err
    assert "Traceback" not in err
    assert not out.exists()
