"""StructurePruner / RatioPruner / RandomPruner: spaces, masked subnets, export and deploy."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torchpare.prune import RandomPruner, RatioPruner, StructurePruner, deploy_subnet
from torchpare.registry import PRUNERS
from torchpare.zoo.catalog import HF_MODELS, ZOO, build_zoo_model


def _resnet():
    torch.manual_seed(0)
    model, x = build_zoo_model("resnet")
    # Non-trivial BatchNorm statistics, so a leaking BN bias would show.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval(), x


def _deployed(model: nn.Module, cfg: dict) -> nn.Module:
    fresh, _ = build_zoo_model("resnet")
    fresh.load_state_dict(model.state_dict())
    return deploy_subnet(fresh.eval(), json.loads(json.dumps(cfg)))


def test_seed_scenario_exported_subnet_deployed_on_fresh_copy_matches_masked_supernet():
    model, x = _resnet()
    full = model(x)
    pruner = RandomPruner(model, x, except_start_keys=["head.fc"])
    assert "head.fc" in pruner.ignored
    subnet = pruner.sample_subnet(torch.Generator().manual_seed(3))
    assert any(not bool(m.all()) for m in subnet.values())
    pruner.set_subnet(subnet)
    masked = model(x)
    cfg = pruner.export_subnet()
    deployed = _deployed(model, cfg)
    torch.testing.assert_close(deployed(x), masked, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in model.parameters())
    pruner.set_max_channel()
    assert torch.equal(model(x), full)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_deploy_uses_kept_indices_not_first_channels():
    model, x = _resnet()
    pruner = StructurePruner(model, x)
    gid = next(iter(pruner.channel_spaces))
    size = pruner.groups[gid].size
    mask = torch.zeros(size, dtype=torch.bool)
    mask[size // 2 :] = True  # keep the last half only
    pruner.set_subnet({gid: mask})
    cfg = pruner.export_subnet()
    assert cfg["__subnet__"]["groups"][gid]["kept"] == list(range(size // 2, size))
    torch.testing.assert_close(_deployed(model, cfg)(x), model(x), atol=1e-5, rtol=0)


def test_export_subnet_reports_module_channels_and_is_json_serialisable():
    model, x = _resnet()
    pruner = RatioPruner(model, x, ratios=(0.5,))
    pruner.set_min_channel()
    cfg = pruner.export_subnet()
    json.dumps(cfg)
    conv = cfg["layer1.0.conv1"]
    assert conv["raw_out_channels"] == 8 and conv["out_channels"] == 4
    assert set(conv) == {"in_channels", "out_channels", "raw_in_channels", "raw_out_channels"}
    assert cfg["head.fc"]["out_channels"] == cfg["head.fc"]["raw_out_channels"] == 10


def test_ratio_pruner_samples_first_channels_with_listed_ratios():
    model, x = _resnet()
    pruner = RatioPruner(model, x, ratios=(0.25, 0.5, 1.0))
    for _ in range(5):
        for mask in pruner.sample_subnet().values():
            kept = int(mask.sum())
            assert mask[:kept].all() and not mask[kept:].any()
            assert kept / mask.numel() in (0.25, 0.5, 1.0)


def test_set_min_channel_then_max_channel_restores_outputs_exactly():
    model, x = _resnet()
    full = model(x)
    pruner = RatioPruner(model, x)
    pruner.set_min_channel()
    assert not torch.allclose(model(x), full)
    pruner.set_max_channel()
    assert torch.equal(model(x), full)


def test_channel_bins_equal_the_expanded_unit_mask():
    model, x = _resnet()
    pruner = StructurePruner(model, x)
    bins = pruner.get_max_channel_bins(4)
    gid = next(iter(bins))
    assert bins[gid].tolist() == [True] * 4
    pruner.set_channel_bins({gid: [1, 0, 1, 0]}, max_channel_bins=4)
    by_bins = model(x)
    size = pruner.groups[gid].size
    expanded = (torch.arange(size) * 4 // size) % 2 == 0
    assert torch.equal(pruner.current_subnet[gid], expanded)
    pruner.set_subnet({gid: expanded})
    assert torch.equal(model(x), by_bins)
    with pytest.raises(ValueError, match=gid):
        pruner.set_channel_bins({gid: [0, 0, 0, 0]}, max_channel_bins=4)


def test_invalid_subnets_raise_clear_errors():
    model, x = _resnet()
    pruner = StructurePruner(model, x)
    gid = next(iter(pruner.channel_spaces))
    size = pruner.groups[gid].size
    with pytest.raises(KeyError, match="unknown space 'layer1.0.convv1'"):
        pruner.set_subnet({"layer1.0.convv1": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=f"{gid}.*{size + 1} entries"):
        pruner.set_subnet({gid: torch.ones(size + 1, dtype=torch.bool)})
    with pytest.raises(ValueError, match=f"removes all {size} units"):
        pruner.set_subnet({gid: torch.zeros(size, dtype=torch.bool)})
    with pytest.raises(ValueError, match="0/1"):
        pruner.set_subnet({gid: torch.full((size,), 2)})


def test_except_start_keys_typo_names_the_closest_module():
    model, x = _resnet()
    with pytest.raises(ValueError, match="'head.fcc'.*did you mean 'head.fc'"):
        StructurePruner(model, x, except_start_keys=["head.fcc"])


def test_ignored_modules_are_not_spaces_but_default_key_is_optional():
    torch.manual_seed(0)
    model, x = build_zoo_model("digits_cnn")  # no head.fc: the default key is skipped silently
    pruner = StructurePruner(model, x, ignored=["layer1.conv"])
    assert "layer1.conv" in pruner.ignored
    assert all("layer1.conv" not in g.id for g in pruner.groups.values())
    with pytest.raises(ValueError, match="ignored='layer1.cnv'.*did you mean 'layer1.conv'"):
        StructurePruner(model, x, ignored=["layer1.cnv"])


def test_masking_is_exact_through_nonlinearities_with_nonzero_at_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Sigmoid(), nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 3))
    x = torch.randn(5, 6)
    fresh = copy.deepcopy(model)
    pruner = StructurePruner(model, x)
    subnet = {gid: torch.arange(g.size) % 2 == 1 for gid, g in pruner.groups.items()}
    pruner.set_subnet(subnet)
    masked = model(x)
    deployed = deploy_subnet(fresh, pruner.export_subnet())
    torch.testing.assert_close(deployed(x), masked, atol=1e-5, rtol=0)


def test_deploy_onto_another_architecture_names_the_space():
    model, x = _resnet()
    pruner = RatioPruner(model, x)
    pruner.set_min_channel()
    cfg = pruner.export_subnet()
    other, _ = build_zoo_model("vgg")
    with pytest.raises(KeyError, match="deploy_subnet.*'head.fc' that VGGNet lacks"):
        deploy_subnet(other, cfg)
    pruned = deploy_subnet(_resnet()[0], cfg)
    with pytest.raises(ValueError, match="unpruned instance"):
        deploy_subnet(pruned, cfg)


def test_pruners_are_registered_and_buildable():
    model, x = _resnet()
    pruner = PRUNERS.build({"type": "RatioPruner", "model": model, "example_inputs": x, "ratios": (0.5, 1.0)})
    assert isinstance(pruner, RatioPruner)
    assert {"StructurePruner", "RatioPruner", "RandomPruner"} <= set(PRUNERS.names())


def test_pruner_context_manager_removes_hooks_even_on_error():
    model, x = _resnet()
    with pytest.raises(RuntimeError, match="boom"), RatioPruner(model, x) as pruner:
        pruner.set_min_channel()
        assert any(m._forward_pre_hooks for m in model.modules())
        raise RuntimeError("boom")
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), name=st.sampled_from(["mlp", "vgg", "mobilenetv2", "densenet"]))
def test_random_subnets_deploy_equal_masked_supernet(seed, name):
    torch.manual_seed(seed)
    model, x = build_zoo_model(name)
    pruner = RandomPruner(model, x)
    pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(seed)))
    masked = model(x)
    fresh, _ = build_zoo_model(name)
    fresh.load_state_dict(model.state_dict())
    deployed = deploy_subnet(fresh.eval(), pruner.export_subnet())
    torch.testing.assert_close(deployed(x), masked, atol=1e-5, rtol=1e-5)


def _logits(model, inputs):
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_deploys_a_random_subnet_equal_to_the_masked_supernet(name):
    if name in HF_MODELS:
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    model, inputs = ZOO[name]()
    state = copy.deepcopy(model.state_dict())
    pruner = RandomPruner(model, inputs)
    pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(0)))
    masked = _logits(model, inputs)
    fresh, _ = ZOO[name]()
    fresh.load_state_dict(state)
    deployed = deploy_subnet(fresh, pruner.export_subnet())
    torch.testing.assert_close(_logits(deployed, inputs), masked, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in model.parameters())


def test_training_a_subnet_leaves_masked_units_without_gradient():
    model, x = _resnet()
    model.train()
    pruner = StructurePruner(model, x)
    gid = "layer1.0.conv1" if "layer1.0.conv1" in pruner.groups else next(iter(pruner.groups))
    size = pruner.groups[gid].size
    mask = torch.arange(size) % 2 == 0
    pruner.set_subnet({gid: mask})
    model(x).square().mean().backward()
    producer = next(m for m in pruner.groups[gid].members if m.role == "out" and m.param_name == "weight")
    grad = model.get_submodule(producer.module_name).weight.grad
    off = [i for u in (~mask).nonzero().flatten().tolist() for i in producer.index_map[u]]
    on = [i for u in mask.nonzero().flatten().tolist() for i in producer.index_map[u]]
    assert torch.count_nonzero(grad.index_select(producer.dim, torch.tensor(off))) == 0
    assert torch.count_nonzero(grad.index_select(producer.dim, torch.tensor(on))) > 0


def test_partial_subnet_keeps_omitted_spaces_whole_and_bins_handle_uneven_sizes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    pruner = StructurePruner(model, torch.randn(2, 4))
    first, second = pruner.groups
    pruner.set_subnet({first: torch.arange(10) < 5})
    assert bool(pruner.current_subnet[second].all())
    pruner.set_channel_bins({first: [1, 0, 1]}, max_channel_bins=3)  # 10 units: bins of 4, 3, 3
    assert pruner.current_subnet[first].int().tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="fewer than max_channel_bins=7"):
        pruner.get_max_channel_bins(7)  # the second space has 6 units


def test_deploy_subnet_requires_the_exported_config():
    model, _ = _resnet()
    with pytest.raises(KeyError, match="'__subnet__'"):
        deploy_subnet(model, {"layer1.0.conv1": {"in_channels": 1, "out_channels": 1}})
