"""Masked units are zero at their producers' outputs too, not only at the consumers' inputs."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from torchpare.prune import StructurePruner, deploy_subnet
from torchpare.prune.pruners._masking import member_owner
from torchpare.record import ModuleOutputsRecorder
from torchpare.zoo.catalog import ZOO, build_zoo_model


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model, x = build_zoo_model(name)
    # Non-trivial BatchNorm statistics: a zeroed conv output would come out of its BN as the bias.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval(), x


def _alternating(pruner: StructurePruner) -> dict[str, torch.Tensor]:
    return {gid: torch.arange(g.size) % 2 == 0 for gid, g in pruner.groups.items()}


def _masked_outputs(pruner: StructurePruner, subnet: dict[str, torch.Tensor], module: str) -> list[int]:
    """Output indices of ``module`` computing a masked unit (from its ``role="out"`` members)."""
    off: set[int] = set()
    for gid, mask in subnet.items():
        for member in pruner.groups[gid].members:
            if member.role == "out" and member_owner(member)[0] == module:
                off.update(i for u in (~mask).nonzero().flatten().tolist() for i in member.index_map[u])
    return sorted(off)


def _record(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, list[torch.Tensor]]:
    recorders = {n: ModuleOutputsRecorder(n) for n in names}
    with contextlib.ExitStack() as stack:
        for recorder in recorders.values():
            recorder.initialize(model)
            stack.enter_context(recorder)
        model(x)
    return {n: [t.detach().clone() for t in r.data_buffer] for n, r in recorders.items()}


def _check(recorded: torch.Tensor, off: list[int], dim: int = 1) -> None:
    assert off, "the subnet masks no output of this module"
    assert torch.count_nonzero(recorded.index_select(dim, torch.tensor(off))) == 0
    kept = [i for i in range(recorded.shape[dim]) if i not in off]
    assert torch.count_nonzero(recorded.index_select(dim, torch.tensor(kept))) > 0


VGG_TRIPLES = [
    ("features.0", "features.1", "features.2"),
    ("features.3", "features.4", "features.5"),
    ("features.7", "features.8", "features.9"),
    ("features.10", "features.11", "features.12"),
]


def test_vgg_masked_conv_bn_and_relu_outputs_are_exactly_zero_and_restored_by_max_channel():
    model, x = _model("vgg")
    names = [n for triple in VGG_TRIPLES for n in triple] + ["classifier.0", "classifier.1"]
    before = _record(model, x, names)
    pruner = StructurePruner(model, x)
    subnet = _alternating(pruner)
    pruner.set_subnet(subnet)
    masked = _record(model, x, names)
    for conv, bn, relu in [*VGG_TRIPLES, ("classifier.0", "classifier.0", "classifier.1")]:
        off = _masked_outputs(pruner, subnet, conv)
        for name in (conv, bn, relu):
            _check(masked[name][0], off)
    pruner.set_max_channel()
    after = _record(model, x, names)
    assert all(torch.equal(after[n][0], before[n][0]) for n in names)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_resnet_masked_conv_bn_relu_and_residual_outputs_are_exactly_zero():
    model, x = _model("resnet")
    pruner = StructurePruner(model, x)
    subnet = _alternating(pruner)
    blocks = [f"layer{i}.{j}" for i in (1, 2) for j in (0, 1)]
    names = (
        ["stem.conv", "stem.bn", "stem.relu"]
        + [f"{b}.{m}" for b in blocks for m in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu")]
        + [f"layer{i}.0.downsample.{k}" for i in (1, 2) for k in (0, 1)]
    )
    before = _record(model, x, names)
    pruner.set_subnet(subnet)
    masked = _record(model, x, names)
    _check(masked["stem.conv"][0], _masked_outputs(pruner, subnet, "stem.conv"))
    _check(masked["stem.bn"][0], _masked_outputs(pruner, subnet, "stem.bn"))
    _check(masked["stem.relu"][0], _masked_outputs(pruner, subnet, "stem.bn"))
    for block in blocks:
        for k in (1, 2, 3):
            off = _masked_outputs(pruner, subnet, f"{block}.bn{k}")
            _check(masked[f"{block}.conv{k}"][0], off)
            _check(masked[f"{block}.bn{k}"][0], off)
            # The block's one ReLU runs after bn1, after bn2 and after the residual addition.
            _check(masked[f"{block}.relu"][k - 1], off)
    for i in (1, 2):
        off = _masked_outputs(pruner, subnet, f"layer{i}.0.downsample.1")
        _check(masked[f"layer{i}.0.downsample.0"][0], off)
        _check(masked[f"layer{i}.0.downsample.1"][0], off)
    pruner.set_max_channel()
    after = _record(model, x, names)
    assert all(torch.equal(a, b) for n in names for a, b in zip(after[n], before[n]))


def test_recorder_attached_before_set_subnet_still_sees_zeros_and_new_subnets_replace_old_zeros():
    model, x = _model("vgg")
    pruner = StructurePruner(model, x)
    size = pruner.groups["features.0"].size
    recorder = ModuleOutputsRecorder("features.1")
    recorder.initialize(model)
    with recorder:  # its hook is older than the pruner's, which still runs first
        pruner.set_subnet({"features.0": torch.arange(size) < size // 2})
        model(x)
        pruner.set_subnet({"features.0": torch.arange(size) >= size // 2})
        model(x)
    first, second = recorder.data_buffer
    half = size // 2
    assert torch.count_nonzero(first[:, half:]) == 0 and torch.count_nonzero(first[:, :half]) > 0
    assert torch.count_nonzero(second[:, :half]) == 0 and torch.count_nonzero(second[:, half:]) > 0
    pruner.set_max_channel()


def test_training_keeps_masked_batchnorm_statistics_and_gives_masked_channels_no_gradient():
    model, x = _model("resnet")
    model.train()
    pruner = StructurePruner(model, x)
    subnet = _alternating(pruner)
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    pruner.set_subnet(subnet)
    model(x).square().mean().backward()
    bn = model.get_submodule("layer1.0.bn1")
    off = _masked_outputs(pruner, subnet, "layer1.0.bn1")
    on = [i for i in range(bn.num_features) if i not in off]
    for stat in ("running_mean", "running_var"):
        old = stats[f"layer1.0.bn1.{stat}"]
        assert torch.equal(getattr(bn, stat)[off], old[off])  # not pulled towards 0 by zeroed inputs
        assert not torch.equal(getattr(bn, stat)[on], old[on])
    conv = model.get_submodule("layer1.0.conv1")
    assert torch.count_nonzero(conv.weight.grad[off]) == 0 and torch.count_nonzero(conv.weight.grad[on]) > 0
    assert torch.count_nonzero(bn.weight.grad[off]) == 0 and torch.count_nonzero(bn.bias.grad[off]) == 0
    pruner.set_max_channel()


def test_output_hooks_are_removed_by_context_exit_even_on_error_and_during_export():
    model, x = _model("vgg")
    with pytest.raises(RuntimeError, match="boom"), StructurePruner(model, x) as pruner:
        pruner.set_subnet(_alternating(pruner))
        assert any(m._forward_hooks for m in model.modules())
        cfg = pruner.export_subnet()  # deep-copies the model with hooks suspended
        assert any(m._forward_hooks for m in model.modules())
        raise RuntimeError("boom")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    fresh, _ = _model("vgg")
    assert not any(m._forward_hooks for m in deploy_subnet(fresh, cfg).modules())


def test_sigmoid_after_a_masked_producer_outputs_one_half_but_the_network_still_equals_the_deployed_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 3))
    x = torch.randn(4, 6)
    fresh = copy.deepcopy(model)
    pruner = StructurePruner(model, x)
    (gid,) = pruner.groups
    pruner.set_subnet({gid: torch.arange(8) < 4})
    recorded = _record(model, x, ["0", "1"])
    assert torch.count_nonzero(recorded["0"][0][:, 4:]) == 0
    assert torch.equal(
        recorded["1"][0][:, 4:], torch.full((4, 4), 0.5)
    )  # sigmoid(0): the documented exception
    torch.testing.assert_close(deploy_subnet(fresh, pruner.export_subnet())(x), model(x), atol=1e-5, rtol=0)
    pruner.set_max_channel()


@pytest.mark.parametrize("name", ["hf_gpt2", "hf_llama"])
def test_masked_heads_are_zero_in_the_qkv_projection_outputs(name):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model, inputs = ZOO[name]()
    pruner = StructurePruner(model, inputs)
    heads = {gid: torch.arange(g.size) == 0 for gid, g in pruner.groups.items() if g.unit != "channel"}
    assert heads
    pruner.set_subnet(heads)
    producers = sorted(
        {member_owner(m)[0] for gid in heads for m in pruner.groups[gid].members if m.role == "out"}
    )
    recorders = {n: ModuleOutputsRecorder(n) for n in producers}
    with contextlib.ExitStack() as stack:
        for recorder in recorders.values():
            recorder.initialize(model)
            stack.enter_context(recorder)
        model(**inputs)
    for module_name, recorder in recorders.items():
        _check(recorder.get_record_data(), _masked_outputs(pruner, heads, module_name), dim=-1)
    pruner.set_max_channel()
