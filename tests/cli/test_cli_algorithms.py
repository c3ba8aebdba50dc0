"""The command line runs every distillation algorithm and the subnet pruners, from the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.prune import count
from torchpare.zoo import DigitsCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["--quiet", "--set", "schedule.epochs=1"]
MLP_KEYS = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def _teacher(tmp_path: Path, width: int = 4, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = tmp_path / f"teacher_w{width}_{seed}.pt"
    torch.save(DigitsCNN(width=width).state_dict(), path)
    return path


def _first_step(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


def test_self_distill_config_runs_without_a_teacher(tmp_path: Path) -> None:
    out = tmp_path / "sd"
    assert main(["distill", str(CONFIGS / "digits_self_distill.yaml"), "--output", str(out), *TINY,
                 "--set", "model.width=4", "--set", "algorithm.distiller.connectors.proj.in_channels=16",
                 "--set", "algorithm.distiller.connectors.proj.out_channels=16"]) == 0
    assert {"student.loss", "distill.loss_hint"} <= _first_step(out).keys()
    assert "layer3.conv.weight" in torch.load(out / "model.pt", weights_only=True)


def test_multi_teacher_config_distils_from_every_teacher(tmp_path: Path) -> None:
    out = tmp_path / "mt"
    assert main(["distill", str(CONFIGS / "digits_multi_teacher.yaml"), "--output", str(out), *TINY,
                 "--set", "teachers.wide.width=4", "--set", f"teachers.wide.checkpoint={_teacher(tmp_path, 4)}",
                 "--set", "teachers.narrow.width=2",
                 "--set", f"teachers.narrow.checkpoint={_teacher(tmp_path, 2)}"]) == 0
    assert {"student.loss", "distill.wide.loss_kd", "distill.narrow.loss_kd"} <= _first_step(out).keys()
    assert set(torch.load(out / "model.pt", weights_only=True)) == MLP_KEYS  # the student only


def test_online_distill_trains_model_with_its_peers_and_saves_the_model_section(tmp_path: Path) -> None:
    cfg = tmp_path / "online.yaml"
    cfg.write_text("""
model: {type: DigitsMLP, hidden: 8}
students: {peer: {type: DigitsMLP, hidden: 4}}
algorithm:
  type: OnlineDistill
  distiller:
    student_recorders: {logits: {type: ModuleOutputs, source: fc2}}
    teacher_recorders: {logits: {type: ModuleOutputs, source: fc2}}
    distill_losses: {kl: {type: KLDivergence, tau: 1}}
    loss_forward_mappings:
      kl:
        preds_S: {from_student: true, recorder: logits}
        preds_T: {from_student: false, recorder: logits}
schedule: {epochs: 1, batch_size: 64}
""")
    out = tmp_path / "online"
    assert main(["distill", str(cfg), "--output", str(out), "--quiet"]) == 0
    step = _first_step(out)
    assert {"student.model.loss", "student.peer.loss", "distill.model<-peer.loss_kl",
            "distill.peer<-model.loss_kl"} <= step.keys()
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == MLP_KEYS and state["fc1.weight"].shape == (8, 64)


def test_ratio_pruner_config_deploys_half_width_subnet_and_recovers(tmp_path: Path) -> None:
    out = tmp_path / "rp"
    assert main(["prune", str(CONFIGS / "digits_ratio_prune.yaml"), "--output", str(out), *TINY,
                 "--set", "model.width=8", "--set", f"model.checkpoint={_teacher(tmp_path, 8)}"]) == 0
    entry = json.loads((out / "results.json").read_text())["models"][0]
    assert entry["prune_summary"].startswith("RatioPruner subnet (ratio 0.5)")
    channels = json.loads((out / "subnet.json").read_text())
    assert channels["layer1.conv"]["out_channels"] == channels["layer1.conv"]["raw_out_channels"] // 2
    full = count(DigitsCNN(width=8), torch.zeros(1, 1, 8, 8))["flops"]
    assert entry["flops"] < 0.5 * full  # half the channels of every conv: about a quarter of the FLOPs
    assert (out / "model" / "pruning.json").is_file()
    assert any(k.startswith("distill.") for k in _first_step(out))  # recovered from the unpruned model


def test_random_pruner_subnet_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    ckpt = _teacher(tmp_path, 8)
    runs = []
    for name in ("a", "b"):
        assert main(["prune", str(CONFIGS / "digits_ratio_prune.yaml"), "--output", str(tmp_path / name),
                     "--quiet", "--set", "model.width=8", "--set", f"model.checkpoint={ckpt}",
                     "--set", "pruner={type: RandomPruner, keep_range: [0.25, 0.75], seed: 7}",
                     "--set", "recover=null", "--set", "schedule=null"]) == 0
        runs.append(json.loads((tmp_path / name / "subnet.json").read_text()))
    assert runs[0] == runs[1]
    assert any(e["out_channels"] < e["raw_out_channels"] for k, e in runs[0].items() if k != "__subnet__")


def test_subnet_naming_an_unknown_space_exits_2_naming_the_key(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prune", str(CONFIGS / "digits_ratio_prune.yaml"), "--output", str(tmp_path / "x"), "--quiet",
                 "--set", "model.width=4", "--set", f"model.checkpoint={_teacher(tmp_path, 4)}",
                 "--set", "pruner.subnet={layer9.conv: 0.5}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pruner.subnet: RatioPruner.set_subnet(): unknown space 'layer9.conv'" in err
    assert "Traceback" not in err
