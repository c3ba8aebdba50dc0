"""prune()'s default widths: kept channel counts rounded to hardware-friendly multiples (round_to=None).

Issue 18: by default the kept width of every channel group is a multiple chosen from the group's size
(``auto_round_to``), the target is still met within its tolerance, ``round_to=1`` keeps exact counts,
and attention heads are never split.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from torchpare.prune import prune
from torchpare.prune.budget import auto_round_to
from torchpare.zoo import ZOO, DenseNetConcat


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 40), nn.ReLU(), nn.Linear(40, 4))


@pytest.mark.parametrize("name", ["mobilenetv2", "vgg"])
def test_default_prune_keeps_multiples_of_the_chosen_divisor_and_meets_the_target(name: str) -> None:
    torch.manual_seed(0)
    model, x = ZOO[name]()
    expected = model(x)
    sizes = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    model, summary = prune(model, x, target_flops_ratio=0.5)
    assert summary.within_tolerance and abs(summary.flops_ratio - 0.5) <= 0.02 * 0.5
    pruned = [(n, sizes[n], m.out_channels) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d) and m.out_channels != sizes[n]]
    assert any(before >= 16 for _, before, _ in pruned), "no large group was pruned"
    # every kept width is a multiple of its group's divisor, or (the fallback that keeps the target)
    # of the divisors all halved once
    levels = [level for level in (0, 1)
              if all(after % max(1, auto_round_to(before) >> level) == 0 for _, before, after in pruned)]
    assert levels, [(n, b, a, auto_round_to(b)) for n, b, a in pruned]
    assert model(x).shape == expected.shape


def test_few_coarse_groups_fall_back_to_finer_multiples_not_to_a_missed_target() -> None:
    torch.manual_seed(0)  # six groups of 16-32 channels: multiples of 8 alone cannot land within 2%
    model = DenseNetConcat(growth=16).eval()
    model, summary = prune(model, torch.randn(2, 3, 16, 16), target_flops_ratio=0.5)
    assert summary.within_tolerance
    assert all(after % 2 == 0 for before, after in summary.groups.values())


def test_round_to_1_keeps_exact_counts_where_the_default_rounds() -> None:
    # params of Linear(16, k) + Linear(k, 4) = 21 k + 4: half of 844 is 422, i.e. k = 19.9 -> 20
    x = torch.randn(2, 16)
    exact, summary = prune(_mlp(), x, target_params_ratio=0.5, round_to=1, tolerance=0.3)
    assert exact[0].out_features == 20 and summary.params_after == 424
    rounded, summary = prune(_mlp(), x, target_params_ratio=0.5, tolerance=0.3)
    assert rounded[0].out_features == 16  # 8 x 2, within the (loose) tolerance
    assert summary.within_tolerance


def test_the_default_falls_back_to_exact_counts_when_rounding_would_miss_the_target() -> None:
    # multiples of 8 give 16 (0.40) or 24 (0.60): both outside 2%; 20 (0.502, a multiple of 4) wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, summary = prune(_mlp(), torch.randn(2, 16), target_params_ratio=0.5)
    assert model[0].out_features == 20 and summary.within_tolerance


def test_explicit_round_to_is_kept() -> None:
    model, summary = prune(_mlp(), torch.randn(2, 16), target_params_ratio=0.5, round_to=4, tolerance=0.3)
    assert model[0].out_features % 4 == 0 and summary.within_tolerance


def test_default_rounding_respects_max_group_ratio() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 20), nn.ReLU(), nn.Linear(20, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the cap makes 10% unreachable
        model, _ = prune(net, torch.randn(2, 8), target_params_ratio=0.1, max_group_ratio=0.8)
    assert model[0].out_features >= 4  # at most 80% of 20 removed, even after rounding


def test_auto_round_to_grows_with_the_group() -> None:
    assert [auto_round_to(n) for n in (1, 7, 8, 15, 16, 31, 32, 4096)] == [1, 1, 4, 4, 16, 16, 16, 16]


def test_heads_are_never_split_by_the_default_rounding() -> None:
    pytest.importorskip("transformers")
    from torchpare.zoo import hf_llama

    torch.manual_seed(0)
    model, inputs = hf_llama()
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, summary = prune(model, inputs, target_flops_ratio=0.7)
    assert summary.within_tolerance
    for layer in model.model.layers:
        attn = layer.self_attn
        q, k, v = attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features
        assert q % head_dim == 0 and k % head_dim == 0 and v == k, (q, k, v)
        assert (q // head_dim) % (k // head_dim) == 0  # whole query heads per kv head
    model(**inputs)


def test_per_layer_pruning_keeps_equal_groups_equal_under_the_default_rounding() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    # equal widths k keep k^2 + 22 k + 4 of 5508 parameters: 40 -> 0.45, 44 -> 0.53, 48 -> 0.61
    model, summary = prune(net, torch.randn(2, 16), target_params_ratio=0.5, global_pruning=False, tolerance=0.1)
    assert summary.within_tolerance
    assert model[0].out_features == model[2].out_features == 40  # 0.451: within 10% of 0.5
