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
    assert [m["name"] for m in models][:2] == ["supernet (max)", "searched 50% FLOPs"]
    assert models[1]["flops"] <= 0.5 * models[0]["flops"]
    cfg = json.loads((out / "subnet_50.json").read_text())
    assert "__subnet__" in cfg and (out / "subnet_50" / "model").is_dir()
    assert (out / "checkpoints" / "last.pt").is_file()
    from torchpare.zoo import DigitsCNN

    DigitsCNN(width=4).load_state_dict(torch.load(out / "model.pt", weights_only=True))  # a plain model


def test_report_draws_searched_subnets_next_to_prune_baselines_with_the_same_steps(tmp_path, capsys):
    out = tmp_path / "slim"
    args = ["slim", str(CONFIG), "--output", str(out), "--quiet", "--set", "model.width=4",
            "--set", "schedule.max_steps=4", "--set", "schedule.epochs=1", "--set", "search.targets=[0.6,0.3]",
            "--set", "search.max_channel_bins=4", "--set", "search.calib_batches=1",
            "--set", "algorithm.pruner.divisor=1", "--set", "algorithm.pruner.ratios=[0.25,1.0]"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prune_60%=" in printed and "uniform_30%=" in printed
    models = json.loads((out / "results.json").read_text())["models"]
    by = {(m["series"], m.get("target")): m for m in models}
    assert set(by) == {("supernet", None), *((s, t) for s in ("searched", "prune", "uniform") for t in (0.6, 0.3))}
    for t in (0.6, 0.3):
        searched, pruned, uniform = by["searched", t], by["prune", t], by["uniform", t]
        assert pruned["train_steps"] == searched["train_steps"] == uniform["train_steps"] == 4
        full = by["supernet", None]["flops"]
        assert searched["flops"] <= t * full and uniform["flops"] <= t * full
        assert pruned["flops"] <= (t + 0.05) * full  # prune()'s own tolerance
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "searched subnets vs prune() + fine-tune vs uniform widths" in page
    for row in ("<td>60%</td>", "<td>30%</td>"):
        assert row in page
    assert "searched_vs_pruned.png" in page and (out / "searched_vs_pruned.png").stat().st_size > 0
    assert "prune() + fine-tune 60% FLOPs" in page and "searched 30% FLOPs" in page


def test_slim_baselines_can_be_switched_off_and_are_checked(tmp_path, capsys):
    out = tmp_path / "slim"
    args = ["slim", str(CONFIG), "--output", str(out), "--quiet", "--set", "model.width=4",
            "--set", "schedule.max_steps=2", "--set", "schedule.epochs=1", "--set", "search.targets=[0.5]",
            "--set", "search.max_channel_bins=2", "--set", "search.calib_batches=1", "--set", "baselines=null",
            "--set", "algorithm.pruner.divisor=1", "--set", "algorithm.pruner.ratios=[0.25,1.0]"]
    assert main(args) == 0
    assert [m["series"] for m in json.loads((out / "results.json").read_text())["models"]] == ["supernet", "searched"]
    bad = ["slim", str(CONFIG), "--output", str(tmp_path / "y"), "--set", "baselines.teacher_fraction=1.5",
           "--set", "baselines.prunes=true"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "baselines.teacher_fraction" in err and "baselines.prunes" in err
    assert not (tmp_path / "y").exists()


def test_slim_command_reports_every_config_problem(tmp_path, capsys):
    args = ["slim", str(CONFIG), "--output", str(tmp_path / "x"), "--set", "search.targets=[2]",
            "--set", "search.budget=1", "--set", "algorithm.num_random_samples=-1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "search.targets" in err and "search.budget" in err
    assert not (tmp_path / "x").exists()


def test_slim_command_checks_the_supernet_settings_up_front(tmp_path, capsys):
    """The pruner's ratios/divisor and AutoSlim's own settings are reported with the rest, before the
    run folder is made (they used to fail only when the supernet was built, after config.yaml was written)."""
    args = ["slim", str(CONFIG), "--output", str(tmp_path / "x"), "--set", "algorithm.pruner.divisor=0",
            "--set", "algorithm.pruner.ratios=[0.5,1.5]", "--set", "algorithm.bn=sync",
            "--set", "algorithm.num_random_samples=-1", "--set", "search.targets=[2]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    for key in ("algorithm.pruner.divisor", "algorithm.pruner.ratios", "algorithm.bn",
                "algorithm.num_random_samples", "search.targets"):
        assert f"{key}:" in err, (key, err)
    assert 'must be "auto" or a positive int' in err
    assert not (tmp_path / "x").exists()
    assert main(["slim", str(CONFIG), "--output", str(tmp_path / "y"), "--set", "algorithm.pruner.type=Foo"]) == 2
    assert "algorithm.pruner.type" in capsys.readouterr().err
