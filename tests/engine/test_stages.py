"""Multi-stage recipes: FT's paraphraser pre-training, then distillation against the frozen paraphraser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.engine.config import ConfigError, load_config
from torchpare.engine.stages import stage_configs
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PARA = "distiller.connectors.paraphraser."


def _ft_config(tmp_path: Path) -> Path:
    """The shipped recipe, tiny: teacher width 4 (its layer3 has 16 channels), 1 epoch per stage."""
    import yaml

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save(DigitsCNN(width=4).state_dict(), teacher)
    cfg = load_config(CONFIGS / "digits_ft_stages.yaml")
    cfg["teacher"].update(width=4, checkpoint=str(teacher))
    cfg["schedule"].update(epochs=1, max_steps=3)
    for stage in cfg["stages"]:
        stage["algorithm"]["distiller"]["connectors"]["paraphraser"]["in_channels"] = 16
        stage.pop("schedule", None)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ft_paraphraser_pretrains_alone_then_is_carried_frozen_into_distillation(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["distill", str(_ft_config(tmp_path)), "--output", str(out), "--quiet"]) == 0
    first = torch.load(out / "stages" / "0-paraphraser" / "objective.pt", weights_only=True)["state"]
    second = torch.load(out / "stages" / "1-distill" / "objective.pt", weights_only=True)["state"]
    para = [k for k in first if k.startswith(PARA)]
    assert para and all(torch.equal(first[k], second[k]) for k in para)  # carried over, then frozen
    student = [k for k in first if k.startswith("student.")]
    assert any(not torch.equal(first[k], second[k]) for k in student)  # the student trains in stage 2 only
    steps = [json.loads(x) for x in (out / "stages" / "0-paraphraser" / "metrics.jsonl").read_text().splitlines()]
    losses = {k for r in steps if r["kind"] == "step" for k in r if "loss" in k and k != "loss"}
    assert losses == {"distill.loss_reconstruct"}  # stage 1: the paraphraser's reconstruction only
    steps = [json.loads(x) for x in (out / "stages" / "1-distill" / "metrics.jsonl").read_text().splitlines()]
    assert {"distill.loss_ft", "student.loss"} <= {k for r in steps if r["kind"] == "step" for k in r}
    results = json.loads((out / "results.json").read_text())["models"][0]
    assert results["stages"] == ["paraphraser", "distill"]


def test_stage_problems_are_reported_together_with_their_stage() -> None:
    cfg = load_config(CONFIGS / "digits_ft_stages.yaml")
    cfg["teacher"]["checkpoint"] = None
    cfg["stages"][0]["schedule"]["epochs"] = 0
    cfg["stages"][1]["freeze"] = "distiller"
    with pytest.raises(ConfigError) as exc:
        stage_configs(cfg, "distill")
    text = "\n".join(exc.value.errors)
    assert "stages[0] (paraphraser): schedule.epochs: must be >= 1" in text
    assert "stages[1].freeze: must be a list of module paths" in text


def test_student_argument_from_the_teacher_is_allowed_only_to_pretrain_a_teacher_connector() -> None:
    from torchpare.distill.distiller import ConfigurableDistiller, DistillerConfigError

    cfg = load_config(CONFIGS / "digits_ft_stages.yaml")["stages"][0]["algorithm"]["distiller"]
    ConfigurableDistiller(**cfg)  # s_feature from the teacher through the paraphraser: pre-training
    del cfg["loss_forward_mappings"]["reconstruct"]["s_feature"]["connector"]
    with pytest.raises(DistillerConfigError, match="'s_feature' is the student side"):
        ConfigurableDistiller(**cfg)


def test_stages_resume_loads_finished_stages_and_refuses_a_changed_one(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = _ft_config(tmp_path)
    assert main(["distill", str(cfg), "--output", str(out), "--quiet"]) == 0
    final = torch.load(out / "model.pt", weights_only=True)
    (out / "stages" / "1-distill" / "objective.pt").unlink()  # as if killed after stage 2's last checkpoint
    assert main(["distill", str(cfg), "--output", str(out), "--quiet", "--resume"]) == 0
    again = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(final[k], again[k]) for k in final)  # stage 1 loaded, stage 2 resumed
    before = (out / "stages" / "0-paraphraser" / "objective.pt").read_bytes()
    args = ["distill", str(cfg), "--output", str(out), "--quiet", "--resume", "--set", "schedule.lr=0.5"]
    assert main(args) == 1
    assert "does not match" in capsys.readouterr().err
    assert (out / "stages" / "0-paraphraser" / "objective.pt").read_bytes() == before
