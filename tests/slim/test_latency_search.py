"""Greedy search on measured latency: robust timing (warm-up, median of runs) and a search that stops at
each latency target; deterministic with a fake latency function, plus one real measured run."""

import time

import pytest
import torch
from torch import nn

from torchpare.datasets import load_digits_split
from torchpare.prune import count
from torchpare.slim import AutoSlim, greedy_search, measure_latency_ms
from torchpare.zoo import DigitsCNN

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def supernet():
    split = load_digits_split(0)
    torch.manual_seed(0)
    algo = AutoSlim(DigitsCNN(width=8), {"ratios": [0.25, 0.5, 1.0], "divisor": 2}, example_inputs=X,
                    bn="recalibrate", num_random_samples=1)
    calib = [(split.x_train[:128],)]
    val = [(split.x_val[:96], split.y_val[:96])]
    return algo, calib, val, split


def test_latency_search_meets_each_target_of_the_latency_function(supernet):
    algo, calib, val, split = supernet
    seen = []

    def fake_ms(model, inputs):  # deterministic: "latency" = FLOPs on the batch it is given, in mega-FLOPs
        seen.append(inputs)
        return count(model, inputs[:1])["flops"] * len(inputs) / 1e6

    batch = split.x_test[:32]
    result = greedy_search(algo, val, targets=(0.8, 0.4), calib_data=calib, metric="latency",
                           latency_fn=fake_ms, latency_inputs=batch, max_channel_bins=4)
    full = count(algo.deploy(1.0), X)["flops"]
    for target, cfg in result.channel_cfgs.items():
        flops = count(algo.deploy(cfg, calib), X)["flops"]
        assert result.ratios[target] <= target
        assert flops / full == pytest.approx(result.ratios[target])
    assert seen and all(x is batch for x in seen)
    assert result.history and all(h["ratio"] <= 1 for h in result.history)


def test_latency_ratios_follow_the_subnet_when_the_machine_load_drifts(supernet):
    algo, calib, val, _ = supernet
    calls = []

    def drifting_ms(model, inputs):  # the "machine" gets slower with every other call (load coming in)
        calls.append(1)
        return count(model, inputs)["flops"] * (1 + 0.5 * ((len(calls) - 1) // 2))

    result = greedy_search(algo, val, targets=(0.6,), calib_data=calib, metric="latency",
                           latency_fn=drifting_ms, latency_rounds=1, max_channel_bins=4)
    full = count(algo.deploy(1.0), X)["flops"]
    flops = count(algo.deploy(result.channel_cfgs[0.6], calib), X)["flops"]
    assert result.ratios[0.6] == pytest.approx(flops / full) and flops / full <= 0.6


def test_latency_search_with_real_measurements_reaches_its_target(supernet):
    algo, calib, val, split = supernet
    result = greedy_search(algo, val, targets=(0.8,), calib_data=calib, metric="latency",
                           latency_inputs=split.x_test[:64], max_channel_bins=2)
    assert 0 < result.ratios[0.8] <= 0.8
    small = algo.deploy(result.channel_cfgs[0.8], calib)
    assert count(small, X)["flops"] < count(algo.deploy(1.0), X)["flops"]


def test_latency_is_the_median_after_warm_up_and_restores_the_mode():
    class Spiky(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls in (1, 6):  # the first call (warm-up) and one timed run are slow
                time.sleep(0.05)
            return x

    net = Spiky().train()
    ms = measure_latency_ms(net, torch.zeros(1), warmup=1, repeats=9, number=1)
    assert ms < 10 and net.training and net.calls == 10
    with pytest.raises(ValueError, match="repeats"):
        measure_latency_ms(net, torch.zeros(1), repeats=0)


def test_latency_metric_rejects_a_non_callable_latency_function(supernet):
    algo, calib, val, _ = supernet
    with pytest.raises(TypeError, match="latency_fn"):
        greedy_search(algo, val, targets=(0.5,), calib_data=calib, metric="latency", latency_fn=3)
    with pytest.raises(ValueError, match="'latency'"):
        greedy_search(algo, val, targets=(0.5,), calib_data=calib, metric="time")
