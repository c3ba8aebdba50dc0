"""Exact resume: a run killed with SIGKILL mid-epoch and resumed equals an uninterrupted run bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchpare.engine.metrics import read_metrics

SCRIPT = Path(__file__).parent / "scripts" / "tiny_run.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *args], env=ENV, capture_output=True,
                          text=True, timeout=120)


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "step"]


def test_run_killed_mid_epoch_and_resumed_matches_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    full = _run(tmp_path / "full")
    assert full.returncode == 0, full.stderr
    killed = _run(tmp_path / "killed", "--kill-at", "10")  # step 10 is mid epoch 2; last checkpoint at 8
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final.pt").exists()
    assert max(s for s, _ in _curve(tmp_path / "killed")) == 10
    resumed = _run(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr

    a = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _curve(tmp_path / "full") == _curve(tmp_path / "killed")
    assert [s for s, _ in _curve(tmp_path / "killed")] == list(range(1, 19))


@pytest.mark.parametrize("epochs", [3])
def test_two_process_ddp_equals_one_process_with_same_global_batch(tmp_path: Path, epochs: int) -> None:
    one = _run(tmp_path / "one", "--dropout", "0")
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path / "two"), "--dropout", "0"]
    two = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-8000:]
    a = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    ca, cb = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [s for s, _ in ca] == [s for s, _ in cb]
    for (_, la), (_, lb) in zip(ca, cb):
        assert la == pytest.approx(lb, abs=1e-5)
