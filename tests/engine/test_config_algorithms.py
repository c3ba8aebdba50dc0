"""Configs for every distillation algorithm and every pruner: models are checked by constructor signature."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchpare.engine.config import (
    ConfigError,
    algorithm_models,
    apply_overrides,
    load_config,
    validate_config,
)
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KD = {
    "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
    "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
    "distill_losses": {"kd": {"type": "KLDivergence", "tau": 4}},
    "loss_forward_mappings": {"kd": {"preds_S": {"from_student": True, "recorder": "logits"},
                                     "preds_T": {"from_student": False, "recorder": "logits"}}},
}
MLP = {"type": "DigitsMLP", "hidden": 8}


def _errors(cfg: dict, task: str = "distill") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg, task)
    return exc.value.errors


def test_models_filled_in_follow_each_algorithms_constructor() -> None:
    assert algorithm_models(ALGORITHMS.get("SingleTeacherDistill")) == {"student": "model", "teacher": "teacher"}
    assert algorithm_models(ALGORITHMS.get("SelfDistill")) == {"model": "model"}
    assert algorithm_models(ALGORITHMS.get("MultiTeacherDistill")) == {"student": "model", "teachers": "teachers"}
    assert algorithm_models(ALGORITHMS.get("OnlineDistill")) == {"students": "students"}


def test_self_distill_needs_no_teacher_section() -> None:
    kd = {**KD, "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}}}  # fc2: not in the CNN
    cfg = {"model": {"type": "DigitsSmallCNN", "width": 4}, "algorithm": {"type": "SelfDistill", "distiller": kd}}
    assert validate_config(cfg, "distill").epochs >= 1


def test_teacher_section_is_required_only_by_algorithms_that_take_a_teacher() -> None:
    cfg = {"model": MLP, "algorithm": {"type": "SingleTeacherDistill", "distiller": KD}}
    assert "teacher: required by 'SingleTeacherDistill' but missing" in _errors(cfg)


def test_unused_model_sections_and_filled_in_arguments_are_refused_with_their_keys() -> None:
    cfg = {"model": MLP, "teacher": {"type": "DigitsCNN"}, "teachers": {"a": {"type": "DigitsCNN"}},
           "algorithm": {"type": "SelfDistill", "distiller": KD, "model": MLP}}
    errors = "\n".join(_errors(cfg))
    assert "teacher: not used by SelfDistill (it takes model); remove the section" in errors
    assert "teachers: not used by SelfDistill" in errors
    assert "algorithm.model: filled in from the 'model' section; remove it here" in errors


def test_multi_teacher_sections_are_checked_name_by_name() -> None:
    cfg = {"model": MLP, "teachers": {"wide": {"type": "DigitsCNN", "widht": 4}, "narrow": {"type": "DigitsCNN"}},
           "algorithm": {"type": "MultiTeacherDistill", "distillers": {"wide": KD},
                         "weights": {"wdie": 0.5}, "teacher_ckpts": {"narrow": "/nope/t.pt"}}}
    errors = "\n".join(_errors(cfg))
    assert "teachers.wide: teachers.wide (DigitsCNN): unexpected argument 'widht'" in errors
    assert "algorithm.weights.wdie: not a teacher name; did you mean 'wide'?" in errors
    assert "algorithm.distillers: no entry for teacher 'narrow'" in errors
    assert "algorithm.teacher_ckpts.narrow: no file at '/nope/t.pt'" in errors
    del cfg["teachers"]
    assert "teachers: required by 'MultiTeacherDistill' but missing" in _errors(cfg)


def test_online_distill_takes_model_plus_the_students_section() -> None:
    kd = {**KD, "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}}}  # peers are MLPs
    cfg = {"model": MLP, "students": {"peer": MLP}, "algorithm": {"type": "OnlineDistill", "distiller": kd}}
    assert validate_config(cfg, "distill").epochs >= 1
    cfg = {"model": MLP, "students": {"model": MLP},
           "algorithm": {"type": "OnlineDistill", "distiller": KD, "pairs": [["model", "pear"]]}}
    errors = "\n".join(_errors(cfg))
    assert "students.model: 'model' names the model section's student" in errors
    assert "algorithm.pairs[0]: 'pear' is not a student" in errors


def test_pruner_class_with_its_arguments_and_subnet_validates() -> None:
    cfg = {"model": {"type": "DigitsCNN"}, "pruner": {"type": "RatioPruner", "ratios": [0.5, 1.0], "subnet": 0.5}}
    assert validate_config(cfg, "prune").epochs >= 1
    cfg["pruner"] = {"type": "RandomPruner", "keep_range": [0.5, 1.0], "seed": 3}
    assert validate_config(cfg, "prune").epochs >= 1


def test_bad_pruner_class_settings_are_each_reported_with_their_key() -> None:
    cfg = {"model": {"type": "DigitsCNN"},
           "pruner": {"type": "RandomPruner", "ratios": [0.5], "subnet": 0.5, "seed": True, "model": "x"}}
    errors = "\n".join(_errors(cfg, "prune"))
    assert "pruner.model: filled in by the engine" in errors
    assert "pruner (RandomPruner): unexpected argument 'ratios'" in errors
    assert "pruner.subnet: a width ratio needs RatioPruner" in errors
    assert "pruner.seed: must be an integer, got True" in errors
    cfg["pruner"] = {"type": "RatioPruner", "subnet": {"layer1.conv": 1.5, "layer2.conv": [1, 2]}}
    errors = "\n".join(_errors(cfg, "prune"))
    assert "pruner.subnet.layer1.conv: a width ratio must be in (0, 1], got 1.5" in errors
    assert "pruner.subnet.layer2.conv: must be a list of 0/1" in errors
    cfg["pruner"] = {"type": "RatioPruner", "subnet": "smaple"}
    assert "did you mean 'sample'" in _errors(cfg, "prune")[0]
    cfg["pruner"] = {"type": "RatioPrunr"}
    assert "did you mean 'RatioPruner'" in _errors(cfg, "prune")[0]


def test_single_problem_is_one_line() -> None:
    cfg = {"model": MLP, "algorithm": {"type": "SingleTeacherDistill", "distiller": KD}}
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg, "distill", source="'c.yaml'")
    assert str(exc.value) == "config 'c.yaml': teacher: required by 'SingleTeacherDistill' but missing"


def test_new_example_configs_validate_once_their_checkpoints_exist(tmp_path: Path) -> None:
    ckpt = tmp_path / "t.pt"
    torch.save(DigitsCNN(width=4).state_dict(), ckpt)
    sd = load_config(CONFIGS / "digits_self_distill.yaml")
    assert validate_config(sd, "distill").epochs >= 1
    mt = apply_overrides(load_config(CONFIGS / "digits_multi_teacher.yaml"),
                         [f"teachers.wide.checkpoint={ckpt}", f"teachers.narrow.checkpoint={ckpt}"])
    assert validate_config(mt, "distill").epochs >= 1
    rp = apply_overrides(load_config(CONFIGS / "digits_ratio_prune.yaml"), [f"model.checkpoint={ckpt}"])
    assert validate_config(rp, "prune").epochs >= 1


def test_distiller_contents_are_validated_with_the_rest_each_with_its_key_path(tmp_path: Path) -> None:
    kd = {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc3"}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
        "distill_deliveries": {"draw": {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.randm"}},
        "distill_losses": {"kd": {"type": "KLDivergenz"}, "mse": {"type": "MSELoss", "wieght": 1}},
        "loss_forward_mappings": {"kd": {"preds_S": {"from_student": True, "recorder": "logits"},
                                         "preds_T": {"from_student": False, "recorder": "logits"}}},
    }
    cfg = {"model": MLP, "teacher": {"type": "DigitsCNN", "width": 4}, "schedule": {"lr": -1},
           "algorithm": {"type": "SingleTeacherDistill", "distiller": kd}}
    errors = _errors(cfg)
    keys = [e.split(": ", 1)[0] for e in errors]
    assert "schedule.lr" in keys  # reported together with the distiller's problems
    assert {"algorithm.distiller.distill_losses.kd.type", "algorithm.distiller.distill_losses.mse",
            "algorithm.distiller.distill_deliveries.draw.func_path"} <= set(keys)
    assert any(e.startswith("algorithm.distiller.distill_losses.kd.type: Registry 'losses' has no type "
                            "'KLDivergenz'; did you mean 'KLDivergence'") for e in errors)
    # the recorder sources are checked against the models once the rest of the distiller builds
    kd = {**KD, "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc3"}}}
    cfg = {"model": MLP, "teacher": {"type": "DigitsCNN", "width": 4},
           "algorithm": {"type": "SingleTeacherDistill", "distiller": kd}}
    (error,) = _errors(cfg)
    assert error.startswith("algorithm.distiller.student_recorders.logits.source: ModuleOutputsRecorder(source='fc3')")
    assert "did you mean 'fc2'" in error


def test_multi_teacher_distillers_are_checked_against_their_own_teacher() -> None:
    kd_small = {**KD, "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}}}
    cfg = {"model": MLP, "teachers": {"cnn": {"type": "DigitsCNN", "width": 4}, "mlp": MLP},
           "algorithm": {"type": "MultiTeacherDistill", "distillers": {"cnn": kd_small, "mlp": kd_small}}}
    (error,) = _errors(cfg)
    assert error.startswith("algorithm.distillers.cnn.teacher_recorders.logits.source: ")


def test_cli_reports_distiller_errors_with_exit_2_before_the_run_folder_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchpare.cli.main import main

    out = tmp_path / "kd"
    code = main(["distill", str(CONFIGS / "digits_self_distill.yaml"), "--output", str(out),
                 "--set", "algorithm.distiller.distill_losses.hint.type=MSELos"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "algorithm.distiller.distill_losses.hint.type: Registry 'losses' has no type 'MSELos'" in err
    assert "Traceback" not in err
