"""Slimmable subnets keep hardware-friendly widths by default (``RatioPruner(divisor="auto")``, issue 18).

The rule is ``prune()``'s multiple (16 from 16 channels, 4 from 8) halved until it neither merges two
ratios nor grows a ratio's width by more than a quarter; ``divisor=1`` keeps exact counts.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from torchpare.prune import RatioPruner
from torchpare.prune.widths import AUTO_DIVISOR_SLACK, auto_divisor, auto_round_to, ratio_width
from torchpare.slim import AutoSlim, greedy_search

X = torch.randn(2, 3, 8, 8)
QUARTERS = (0.25, 0.5, 0.75, 1.0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )


def _widths(pruner: RatioPruner, subnet) -> dict[int, int]:
    """{space size: kept units} of a subnet."""
    return {pruner.groups[gid].size: int(mask.sum()) for gid, mask in subnet.items()}


def test_default_divisor_is_auto_and_keeps_multiples_of_16_where_the_ratios_allow() -> None:
    pruner = RatioPruner(_net(), X, ratios=QUARTERS)
    assert pruner.divisor == "auto"
    assert pruner.divisor_of(64) == 16 and pruner.divisor_of(24) == 2
    assert _widths(pruner, pruner.min_subnet()) == {64: 16, 24: 6}
    assert _widths(pruner, pruner.ratio_subnet(0.75)) == {64: 48, 24: 18}


def test_auto_rounds_ratios_that_exact_counts_would_leave_odd() -> None:
    ratios = (0.3, 0.55, 1.0)  # exact widths of 64 channels: 20, 36, 64
    auto = RatioPruner(_net(), X, ratios=ratios)
    exact = RatioPruner(_net(), X, ratios=ratios, divisor=1)
    assert _widths(exact, exact.min_subnet())[64] == 20
    assert auto.divisor_of(64) == 8  # 16 would make 20 -> 32 (+60%); 8 makes it 24 (+20%)
    assert _widths(auto, auto.min_subnet())[64] == 24
    assert _widths(auto, auto.ratio_subnet(0.55))[64] == 40


def test_an_explicit_divisor_is_kept_as_given() -> None:
    pruner = RatioPruner(_net(), X, ratios=QUARTERS, divisor=1)
    assert pruner.divisor_of(64) == 1 and pruner.divisor_of(24) == 1
    pruner = RatioPruner(_net(), X, ratios=QUARTERS, divisor=8)
    assert _widths(pruner, pruner.min_subnet()) == {64: 16, 24: 8}


@pytest.mark.parametrize("bad", ["Auto", 0, -4, 2.0, True])
def test_a_bad_divisor_says_what_is_allowed(bad) -> None:
    with pytest.raises(ValueError, match=r'divisor must be "auto" or a positive int'):
        RatioPruner(_net(), X, divisor=bad)


@given(
    size=st.integers(1, 4096),
    ratios=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=12),
)
def test_auto_divisor_never_merges_ratios_or_overshoots_them(size: int, ratios: list[float]) -> None:
    d = auto_divisor(size, ratios)
    assert d >= 1 and auto_round_to(size) % d == 0  # a power-of-two step down from prune()'s multiple
    exact = {ratio_width(size, r) for r in ratios}
    rounded = {w: ratio_width(size, w / size, d) for w in exact}
    assert len(set(rounded.values())) == len(exact)
    if d > 1:
        assert all(r <= w * (1 + AUTO_DIVISOR_SLACK) for w, r in rounded.items())
        assert all(r % d == 0 or r == size for r in rounded.values())


def test_slimmable_search_ladders_follow_the_auto_divisor() -> None:
    """From the user's side: an AutoSlim supernet with the default pruner searches widths that are
    multiples of each space's divisor, and the searched subnet deploys to exactly those widths."""
    torch.manual_seed(0)
    algo = AutoSlim(_net(), {"ratios": QUARTERS}, example_inputs=X, bn="recalibrate", num_random_samples=1)
    x = torch.randn(32, 3, 8, 8)
    data = [(x, torch.randint(0, 10, (32,)))]
    result = greedy_search(algo, data, targets=(0.6, 0.3), calib_data=data, max_channel_bins=12)
    pruner = algo.pruner
    assert result.channel_cfgs, "no target recorded"
    for target, cfg in result.channel_cfgs.items():
        small = algo.deploy(cfg, data)
        first, second = (m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d))
        assert first % pruner.divisor_of(64) == 0 and second % pruner.divisor_of(24) == 0, (target, first, second)
        assert result.ratios[target] <= target
