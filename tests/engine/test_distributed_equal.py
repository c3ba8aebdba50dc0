"""2 gloo processes give the 1-process result with partial labels, an odd global batch and a 1-sample
last batch (a rank with no sample); SyncBatchNorm is refused where torch cannot run it (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchpare.engine.distributed import DistInfo, normalise_losses

SCRIPT = Path(__file__).parent / "scripts" / "ddp_partial.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_and_two(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one"), *args], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path / "two"), *args]
    two = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-8000:]
    return (torch.load(tmp_path / "one" / "final.pt", weights_only=True),
            torch.load(tmp_path / "two" / "final.pt", weights_only=True))


@pytest.mark.slow
def test_two_processes_equal_one_with_ten_percent_labels_and_an_odd_global_batch(tmp_path: Path) -> None:
    a, b = _one_and_two(tmp_path)
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-6, k


def test_sync_batchnorm_on_cpu_processes_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchpare.engine.trainer as trainer_mod
    from torchpare.engine.schedule import TrainConfig

    two = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: two)
    data = torch.utils.data.TensorDataset(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="schedule.sync_batchnorm needs CUDA"):
        trainer_mod.Trainer(torch.nn.Linear(2, 2), data, config=TrainConfig(sync_batchnorm=True))
    trainer_mod.Trainer(torch.nn.Linear(2, 2), data, config=TrainConfig(sync_batchnorm=False))


def test_losses_are_weighted_by_each_ranks_share_of_the_global_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchpare.engine.distributed as d

    # rank 0 of 2 holds 3 of 5 samples and 1 of 4 labelled ones
    monkeypatch.setattr(d.dist, "all_reduce", lambda t, op=None: t.copy_(torch.tensor([5.0, 4.0], dtype=t.dtype)))
    info = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    losses = {"student.loss": torch.tensor(1.0), "distill.loss_kd": torch.tensor(1.0)}
    out = normalise_losses(losses, torch.tensor([0, -100, -100]), 3, info)
    assert out["student.loss"].item() == pytest.approx(1 * 2 / 4)
    assert out["distill.loss_kd"].item() == pytest.approx(3 * 2 / 5)
    single = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert normalise_losses(losses, torch.tensor([0]), 1, single) is losses
