"""``torchpare slim CONFIG``: the shipped config runs end to end (shortened) and bad configs exit 2."""

import json
from pathlib import Path

import torch

from torchpare.cli.main import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "slim_digits.yaml"


def test_slim_command_trains_searches_deploys_and_evaluates(tmp_path, capsys):
    out = tmp_path / "slim"
    args = ["slim", str(CONFIG), "--output", str(out), "--quiet", "--set", "model.width=4",
            "--set", "schedule.max_steps=3", "--set", "schedule.epochs=1", "--set", "search.targets=[0.5]",
            "--set", "search.max_channel_bins=2", "--set", "search.calib_batches=1",
            "--set", "algorithm.pruner.divisor=1", "--set", "algorithm.pruner.ratios=[0.25,1.0]"]
    assert main(args) == 0
    assert "supernet=" in capsys.readouterr().out
    models = json.loads((out / "results.json").read_text())["models"]
    assert [m["name"] for m in models] == ["supernet (max)", "searched 50% FLOPs"]
    assert models[1]["flops"] <= 0.5 * models[0]["flops"]
    cfg = json.loads((out / "subnet_50.json").read_text())
    assert "__subnet__" in cfg and (out / "subnet_50" / "model").is_dir()
    assert (out / "checkpoints" / "last.pt").is_file()
    from torchpare.zoo import DigitsCNN

    DigitsCNN(width=4).load_state_dict(torch.load(out / "model.pt", weights_only=True))  # a plain model


def test_slim_command_reports_every_config_problem(tmp_path, capsys):
    args = ["slim", str(CONFIG), "--output", str(tmp_path / "x"), "--set", "search.targets=[2]",
            "--set", "search.budget=1", "--set", "algorithm.num_random_samples=-1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "search.targets" in err and "search.budget" in err
    assert not (tmp_path / "x").exists()
