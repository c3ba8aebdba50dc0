"""YAML configs: overrides, validation collecting every error with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchpare.engine.config import ConfigError, apply_overrides, load_config, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name,task", [("digits_teacher.yaml", "train")])
def test_shipped_configs_validate(name: str, task: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert validate_config(cfg, task).epochs >= 1


def test_override_parses_yaml_values_and_creates_sections() -> None:
    cfg = apply_overrides({"schedule": {"lr": 0.1}}, ["schedule.lr=1e-2", "schedule.grad_clip=null",
                                                      "data.label_fraction=0.1", "model.type=DigitsMLP"])
    assert cfg == {"schedule": {"lr": 0.01, "grad_clip": None}, "data": {"label_fraction": 0.1},
                   "model": {"type": "DigitsMLP"}}


def test_override_through_a_scalar_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.lr: --set 'schedule\.lr\.x=1' goes through a value"):
        apply_overrides({"schedule": {"lr": 0.1}}, ["schedule.lr.x=1"])


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers()), st.integers())
def test_override_never_mutates_the_input(base: dict, value: int) -> None:
    before = dict(base)
    out = apply_overrides(base, [f"a.z={value}"] if not isinstance(base.get("a"), int) else [f"b2={value}"])
    assert base == before and out is not base


def test_validation_collects_all_errors_before_training() -> None:
    cfg = {"model": {"type": "DigitsCNN", "widht": 3}, "schedule": {"amp": "fp8", "batch_size": 0},
           "algorithm": {"type": "SingleTeacherDistil"}}
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg, "distill", source="'x.yaml'")
    errors = exc.value.errors
    joined = "\n".join(errors)
    assert "model: model (DigitsCNN): unexpected argument 'widht'; did you mean 'width'?" in joined
    assert "schedule.amp: must be one of none, bf16, fp16, got 'fp8'" in joined
    assert "schedule.batch_size: must be >= 1, got 0" in joined
    assert "algorithm.type:" in joined and "did you mean 'SingleTeacherDistill'" in joined
    assert str(exc.value).startswith("config 'x.yaml': 4 problem(s)")


def test_invalid_yaml_and_non_mapping_top_level_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections, got list"):
        load_config(bad)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.yaml"
    bad.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_distill_and_prune_configs_validate_once_the_teacher_exists(tmp_path: Path) -> None:
    import torch

    from torchpare.zoo import DigitsCNN

    ckpt = tmp_path / "teacher.pt"
    torch.save(DigitsCNN(width=32).state_dict(), ckpt)
    kd = apply_overrides(load_config(CONFIGS / "digits_kd.yaml"), [f"teacher.checkpoint={ckpt}"])
    assert validate_config(kd, "distill").epochs == 30
    pr = apply_overrides(load_config(CONFIGS / "digits_prune.yaml"), [f"model.checkpoint={ckpt}"])
    assert validate_config(pr, "prune").lr == 0.002


def test_unknown_pruner_argument_is_named_with_suggestion() -> None:
    cfg = {"model": {"type": "DigitsCNN"}, "pruner": {"target_flop_ratio": 0.5}}
    with pytest.raises(ConfigError, match=r"pruner\.target_flop_ratio: unknown argument; did you mean 'target_flops_ratio'"):
        validate_config(cfg, "prune")
