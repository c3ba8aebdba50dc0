"""Checkpoints: atomic, validated; corrupt or mismatched files raise clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchpare.engine.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    model_fingerprint,
    save_checkpoint,
)
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer


def _trainer(run_dir: Path, hidden: int = 8, **cfg: object) -> Trainer:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    config = TrainConfig(epochs=1, batch_size=8, device="cpu", quiet=True, **cfg)  # type: ignore[arg-type]
    return Trainer(model, data, config=config, run_dir=run_dir)


def test_truncated_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt' is corrupt or truncated"):
        _trainer(tmp_path).fit(resume=True)


def test_garbage_checkpoint_raises_instead_of_restarting(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        _trainer(tmp_path).fit(resume=True)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_checkpoint_of_other_model_raises_mismatch_naming_tensor_and_shape(tmp_path: Path) -> None:
    _trainer(tmp_path, hidden=8).fit()
    with pytest.raises(CheckpointMismatchError, match=r"'model\.0\.weight' has shape \[8, 4\] in the checkpoint"):
        _trainer(tmp_path, hidden=16).fit(resume=True)


def test_checkpoint_with_other_settings_raises_mismatch_naming_setting(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    with pytest.raises(CheckpointMismatchError, match="setting 'lr' is 0.001 in the checkpoint, 0.5 now"):
        _trainer(tmp_path, lr=0.5).fit(resume=True)


def test_foreign_torch_file_is_not_accepted_as_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="not a torchpare training checkpoint"):
        load_checkpoint(path)


def test_save_is_atomic_previous_file_survives_failing_writer(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    model = nn.Linear(2, 2)
    save_checkpoint(path, {"v": 1}, model_fingerprint(model))

    def failing_writer(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    from torchpare._utils import atomic_save

    with pytest.raises(OSError, match="disk full"):
        atomic_save(path, failing_writer)
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_resume_without_checkpoint_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*last\.pt'; run without --resume"):
        _trainer(tmp_path).fit(resume=True)
    assert not (tmp_path / "metrics.jsonl").exists()
