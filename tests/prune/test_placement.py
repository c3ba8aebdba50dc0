"""Models wrapped in DDP or spread over devices: pruned through the wrapped module, or refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch import nn

from torchpare.prune import DependencyGraph, prune
from torchpare.prune.counting import meta_copy
from torchpare.prune.graph import ModelPlacementError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture
def gloo(tmp_path):
    """A world of one CPU process (gloo, file rendezvous: no port)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_model_is_refused_with_the_unwrap_fix(gloo):
    ddp = nn.parallel.DistributedDataParallel(_net())
    x = torch.randn(4, 6)
    with pytest.raises(ModelPlacementError, match=r"model\.module") as info:
        DependencyGraph.build(ddp, x)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ModelPlacementError, match="wrap it again"):
        prune(ddp, x, target_params_ratio=0.5)
    assert ddp.module[0].out_features == 16  # nothing was pruned


def test_ddp_unwrap_prune_rewrap_trains_and_matches(gloo):
    """The documented recipe: prune ``model.module``, wrap again; the new wrapper trains the pruned weights."""
    ddp = nn.parallel.DistributedDataParallel(_net())
    x = torch.randn(4, 6)
    pruned, summary = prune(ddp.module, x, target_params_ratio=0.5, round_to=1)
    assert pruned[0].out_features < 16
    ddp = nn.parallel.DistributedDataParallel(pruned)
    torch.testing.assert_close(ddp(x), pruned(x))
    ddp(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in pruned.parameters())


def test_data_parallel_wrapper_is_refused():
    with pytest.raises(ModelPlacementError, match="DataParallel"):
        DependencyGraph.build(nn.DataParallel(_net()), torch.randn(4, 6))


def test_weights_on_meta_next_to_real_ones_are_refused_naming_both():
    net = _net()
    net[2].to("meta")
    with pytest.raises(ModelPlacementError, match=r"'2\.weight'.*'0\.weight'.*meta_copy"):
        DependencyGraph.build(net, torch.randn(4, 6))
    with pytest.raises(ModelPlacementError, match=r"prune\(\): .*'2\.weight'.*meta_copy"):
        prune(net, torch.randn(4, 6), target_params_ratio=0.5)  # the placement fix, not a FLOPs-count error


def test_half_meta_model_plans_on_a_meta_copy_then_applies_to_the_loaded_model():
    """The fix the error names: plan on a meta copy, apply to the model once every weight is loaded."""
    net = _net()
    half = _net()
    half[2].to("meta")
    _, summary = prune(meta_copy(half), torch.randn(4, 6), "random", target_params_ratio=0.5, dry_run=True)
    summary.apply(net, torch.randn(4, 6))
    assert net[0].out_features == net[2].in_features < 16
    assert net(torch.randn(4, 6)).shape == (4, 3)


def test_fsdp_like_module_is_refused():
    class FullyShardedDataParallel(nn.Module):  # stands for torch's (which needs a process group)
        def __init__(self) -> None:
            super().__init__()
            self.inner = _net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    model = nn.Sequential(FullyShardedDataParallel())
    with pytest.raises(ModelPlacementError, match="FSDP-sharded module at '0'"):
        DependencyGraph.build(model, torch.randn(4, 6))


_TWO_RANKS = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch import nn
    from torchpare.prune import prune
    rank, path = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method="file://" + path, rank=rank, world_size=2)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(4, 6)
    pruned, _ = prune(net, x, target_params_ratio=0.5, round_to=1)  # L1: the same plan on every rank
    ddp = nn.parallel.DistributedDataParallel(pruned)
    torch.manual_seed(rank)
    ddp(torch.randn(4, 6)).square().sum().backward()
    g = pruned[0].weight.grad.clone()
    dist.all_reduce(g)
    assert torch.allclose(g / 2, pruned[0].weight.grad), "gradients differ across ranks"
    print("ok", pruned[0].out_features)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_rank_ddp_prunes_each_rank_the_same_and_syncs_gradients(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    path = str(tmp_path / "rdzv")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_RANKS, str(r), path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()[-2000:]
    assert {o.decode().split()[-1] for o, _ in outs} == {outs[0][0].decode().split()[-1]}
