"""Greedy slimming meets each target and deploys exactly; the seed's pruner API around it."""

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.prune import RatioPruner, count, deploy_subnet
from torchpare.slim import AutoSlim, greedy_search
from torchpare.zoo import DigitsCNN

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def searched():
    split = load_digits_split(0)
    torch.manual_seed(0)
    algo = AutoSlim(DigitsCNN(width=8), {"ratios": [0.25, 0.5, 1.0], "divisor": 2}, example_inputs=X,
                    bn="recalibrate", num_random_samples=1)
    train = TensorDataset(split.x_train[:256], split.y_train[:256])
    Trainer(algo, train, config=TrainConfig(epochs=1, batch_size=64, lr=0.01, seed=0, quiet=True)).fit()
    calib = [(split.x_train[:128], split.y_train[:128])]
    val = TensorDataset(split.x_val[:128], split.y_val[:128])
    result = greedy_search(algo, val, targets=(0.75, 0.5, 0.3), calib_data=calib, max_channel_bins=4)
    return algo, result, calib, split


def test_search_meets_each_flops_target(searched):
    algo, result, _, _ = searched
    full = count(algo.deploy(1.0), X)["flops"]
    assert sorted(result.channel_cfgs) == [0.3, 0.5, 0.75]
    for target, cfg in result.channel_cfgs.items():
        small = algo.deploy(cfg, searched[2])
        ratio = count(small, X)["flops"] / full
        assert ratio <= target and ratio == pytest.approx(result.ratios[target])
    assert len(result.history) >= 3


def test_searched_subnets_deploy_to_smaller_models_equal_to_the_masked_supernet(searched):
    algo, result, calib, split = searched
    x = split.x_test[:64]
    for cfg in result.channel_cfgs.values():
        small = algo.deploy(cfg, calib).eval()
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in algo.student.parameters())
        with algo.subnet(cfg, calib) as net:
            expected = net.eval()(x)
        torch.testing.assert_close(small(x), expected, atol=1e-5, rtol=0)
    assert not algo.pruner._masker.active and algo.student.training


def test_search_respects_the_divisor(searched):
    _, result, _, _ = searched
    for cfg in result.channel_cfgs.values():
        for name, entry in cfg.items():
            if name != "__subnet__" and name != "fc":
                assert entry["out_channels"] % 2 == 0, (name, entry)


def test_searched_subnet_fine_tunes_with_the_engine(searched):
    algo, result, calib, split = searched
    small = algo.deploy(result.channel_cfgs[0.5], calib)
    data = TensorDataset(split.x_train[:128], split.y_train[:128])
    out = Trainer(small, data, config=TrainConfig(epochs=1, batch_size=64, lr=0.01, quiet=True)).fit()
    assert out.global_step == 2


def test_distill_score_searches_without_labels(searched):
    algo, _, calib, split = searched
    unlabelled = [(split.x_val[:64],)]
    result = greedy_search(algo, unlabelled, targets=(0.6,), calib_data=calib, score="distill",
                           max_channel_bins=2)
    assert result.ratios[0.6] <= 0.6 and result.scores[0.6] <= 0.0


def test_unreachable_target_names_the_smallest_ratio(searched):
    algo, _, calib, split = searched
    with pytest.raises(ValueError, match="smallest subnet reaches"):
        greedy_search(algo, [(split.x_val[:32], split.y_val[:32])], targets=(0.01,), calib_data=calib,
                      max_channel_bins=2)


# -- the seed's pruner API ------------------------------------------------------------------------
def _pruner(divisor=1):
    torch.manual_seed(0)
    return RatioPruner(DigitsCNN(width=6), X, ratios=(0.3, 0.5, 1.0), divisor=divisor)


def test_ratio_pruner_divisor_keeps_multiples():
    pruner = _pruner(divisor=4)
    for ratio in (0.3, 0.5, 1.0):
        for gid, mask in pruner.ratio_subnet(ratio).items():
            n, size = int(mask.sum()), mask.numel()
            assert n % 4 == 0 or n == size, (gid, n, size)
    gen = torch.Generator().manual_seed(0)
    for mask in pruner.sample_subnet(gen).values():
        assert int(mask.sum()) % 4 == 0 or bool(mask.all())
    with pytest.raises(ValueError, match="divisor"):
        RatioPruner(DigitsCNN(width=4), X, divisor=0)


def test_channel_cfg_without_subnet_entry_deploys_like_the_full_one():
    pruner = _pruner()
    fresh = copy.deepcopy(pruner.model)
    pruner.model.eval()
    cfg = pruner.export_subnet(pruner.ratio_subnet(0.5))
    mmrazor = {k: v for k, v in cfg.items() if k != "__subnet__"}
    x = torch.rand(5, 1, 8, 8)
    pruner.set_subnet(pruner.subnet_from_channel_cfg(mmrazor))
    expected = pruner.model(x)
    pruner.set_max_channel()
    small = pruner.deploy_subnet(copy.deepcopy(fresh).eval(), mmrazor)
    torch.testing.assert_close(small(x), expected, atol=1e-5, rtol=0)
    small_fn = deploy_subnet(copy.deepcopy(fresh).eval(), mmrazor, X)
    torch.testing.assert_close(small_fn(x), expected, atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="example_inputs"):
        deploy_subnet(copy.deepcopy(fresh), mmrazor)


def test_channel_cfg_off_a_unit_boundary_is_an_error():
    pruner = _pruner()
    cfg = {k: dict(v) for k, v in pruner.export_subnet(pruner.ratio_subnet(0.5)).items() if k != "__subnet__"}
    cfg["stem.conv"]["out_channels"] = 2
    cfg["stem.bn"]["out_channels"] = 3
    with pytest.raises(ValueError, match="different numbers of units"):
        deploy_subnet(DigitsCNN(width=6), cfg, X)


def test_deploying_while_masks_are_set_says_call_set_max_channel_first():
    pruner = _pruner()
    cfg = pruner.export_subnet(pruner.ratio_subnet(0.5))
    pruner.set_subnet(pruner.ratio_subnet(0.5))
    with pytest.raises(ValueError, match=r"call set_max_channel\(\) first"):
        pruner.deploy_subnet(pruner.model, cfg)
    with pytest.raises(ValueError, match=r"call set_max_channel\(\) first"):
        deploy_subnet(pruner.model, cfg)
    pruner.set_max_channel()
    assert pruner.deploy_subnet(pruner.model, cfg).stem.conv.out_channels == 3


def test_get_space_id_and_prepare_from_supernet():
    pruner = _pruner()
    assert pruner.get_space_id("stem.conv") == pruner.get_space_id("stem.bn") is not None
    assert pruner.get_space_id("pool") is None
    with pytest.raises(KeyError, match="stem"):
        pruner.get_space_id("stemm")
    other = DigitsCNN(width=6)
    assert pruner.prepare_from_supernet(other) is pruner and pruner.model is other
    assert pruner.ratios == (0.3, 0.5, 1.0) and set(pruner.groups)


def test_refine_spends_the_budget_left_under_each_target_without_losing_score(searched):
    algo, _, calib, split = searched
    val = [(split.x_val[:128], split.y_val[:128])]
    kwargs = {"targets": (0.7, 0.45), "calib_data": calib, "max_channel_bins": 4, "score": "loss"}
    plain = greedy_search(algo, val, refine=False, **kwargs)
    refined = greedy_search(algo, val, **kwargs)
    for t in (0.7, 0.45):
        assert plain.ratios[t] <= refined.ratios[t] <= t
        assert refined.scores[t] >= plain.scores[t]
    assert plain.history == refined.history  # one shared shrinking pass; refinement happens per target after it
