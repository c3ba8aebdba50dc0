"""Checkpoint files: the newest N plus the best, fallback to the newest readable one, --resume PATH,
leftover temp files removed, and no weights_only=False advice."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.checkpoint import CheckpointError, load_checkpoint
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer


def _trainer(run_dir: Path, epochs: int = 4, **cfg: object) -> tuple[Trainer, nn.Module]:
    torch.manual_seed(0)
    split = load_digits_split(0)
    data = TensorDataset(split.x_train[:64], split.y_train[:64])
    val = TensorDataset(split.x_val[:64], split.y_val[:64])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, scheduler="constant", device="cpu", quiet=True,
                         **cfg)  # type: ignore[arg-type]
    return Trainer(model, data, val_data=val, config=config, run_dir=run_dir), model


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_keeps_the_newest_n_and_the_best_by_validation_metric(tmp_path: Path) -> None:
    trainer, _ = _trainer(tmp_path, epochs=5, keep_checkpoints=2, best_metric="val_loss")
    result = trainer.fit()
    losses = [ep["val_loss"] for ep in result.history]
    best_step = result.history[losses.index(min(losses))]["step"]
    steps = {f"step-{s:08d}.pt" for s in (8, 10, best_step)}  # 2 steps an epoch: newest two + best
    assert _names(tmp_path) == sorted({"best.pt", "last.pt", *steps})
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["best"] == {"value": min(losses), "step": best_step}
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["position"]["global_step"] == 10


def test_keep_checkpoints_must_be_positive() -> None:
    assert TrainConfig(keep_checkpoints=0).validate() == ["keep_checkpoints: must be >= 1, got 0"]


def test_resume_falls_back_to_the_newest_readable_checkpoint_naming_the_broken_one(tmp_path: Path) -> None:
    full, full_model = _trainer(tmp_path / "full", epochs=3)
    full.fit()
    trainer, _ = _trainer(tmp_path / "run", epochs=2)
    trainer.fit()
    broken = tmp_path / "run" / "checkpoints" / "step-00000004.pt"
    broken.write_bytes(broken.read_bytes()[:100])  # last.pt is the same file: both broken
    resumed, model = _trainer(tmp_path / "run", epochs=3)
    with pytest.warns(UserWarning, match=r"skipped unreadable checkpoint.*step-00000004\.pt' is corrupt"):
        resumed.fit(resume=True)
    # resumed from the end of epoch 1 (constant LR: 2 more epochs are allowed) = the uninterrupted result
    for a, b in zip(full_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_path_picks_a_checkpoint(tmp_path: Path) -> None:
    full, full_model = _trainer(tmp_path / "full", epochs=3, keep_checkpoints=3)
    full.fit()
    trainer, model = _trainer(tmp_path / "full", epochs=3, keep_checkpoints=3)
    result = trainer.fit(resume=tmp_path / "full" / "checkpoints" / "step-00000002.pt")
    assert [ep["epoch"] for ep in result.history] == [0, 1, 2]
    for a, b in zip(full_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / ".step-00000002.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    trainer, _ = _trainer(tmp_path, epochs=1)
    trainer.fit()
    assert not any(p.name.endswith(".tmp") for p in ckpts.iterdir())


def test_no_readable_checkpoint_lists_every_broken_file_and_never_suggests_weights_only_false(
    tmp_path: Path,
) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"x": Path("p")}, ckpts / "last.pt")  # a pathlib object: needs the unsafe unpickler
    (ckpts / "step-00000002.pt").write_bytes(b"garbage")
    trainer, _ = _trainer(tmp_path, epochs=1)
    with warnings.catch_warnings(), pytest.raises(CheckpointError) as exc:
        trainer.fit(resume=True)
    msg = str(exc.value)
    assert "last.pt' is corrupt" in msg and "step-00000002.pt' is corrupt" in msg
    assert "weights_only=False" not in msg and "weights_only" not in msg
