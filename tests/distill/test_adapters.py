"""Adapters between a teacher layer and its channel-pruned copy."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchpare.distill.adapters import (
    conv2d_adapter,
    inverted_conv2d_adapter,
    inverted_linear_adapter,
    linear_adapter,
    match_channels,
)


def pruned_conv(conv: nn.Conv2d, keep_out: torch.Tensor, keep_in: torch.Tensor | None = None) -> nn.Conv2d:
    """A copy of ``conv`` keeping output channels ``keep_out`` (and input channels ``keep_in``)."""
    weight = conv.weight.detach()[keep_out]
    if keep_in is not None:
        weight = weight[:, keep_in]
    groups = len(keep_out) if conv.groups == conv.in_channels == conv.out_channels else conv.groups
    new = nn.Conv2d(
        weight.shape[1] * groups,
        len(keep_out),
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias[keep_out])
    return new


def pruned_linear(
    linear: nn.Linear, keep_out: torch.Tensor, keep_in: torch.Tensor | None = None
) -> nn.Linear:
    weight = linear.weight.detach()[keep_out]
    if keep_in is not None:
        weight = weight[:, keep_in]
    new = nn.Linear(weight.shape[1], len(keep_out))
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(linear.bias[keep_out])
    return new


def half(n: int) -> torch.Tensor:
    return torch.randperm(n)[: n // 2].sort().values


def test_conv_adapter_reproduces_the_kept_channels_of_a_50_percent_pruned_copy():
    teacher = nn.Conv2d(8, 32, 3, padding=1)
    kept = half(32)
    student = pruned_conv(teacher, kept)
    adapter = conv2d_adapter(source=teacher, target=student)
    assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (1, 1) and adapter.bias is None
    assert (adapter.in_channels, adapter.out_channels) == (32, 16)
    x = torch.randn(2, 8, 6, 6)
    t_out = teacher(x)
    torch.testing.assert_close(adapter(t_out), t_out[:, kept], rtol=0, atol=1e-6)
    torch.testing.assert_close(adapter(t_out), student(x), rtol=0, atol=1e-6)


def test_inverted_conv_adapter_embeds_the_kept_channels_back_at_their_teacher_positions():
    teacher = nn.Conv2d(8, 32, 3, padding=1)
    kept = half(32)
    student = pruned_conv(teacher, kept)
    adapter = inverted_conv2d_adapter(source=teacher, target=student)
    assert (adapter.in_channels, adapter.out_channels) == (16, 32)
    x = torch.randn(2, 8, 6, 6)
    s_out = student(x)
    widened = adapter(s_out)
    torch.testing.assert_close(widened[:, kept], s_out, rtol=0, atol=1e-6)
    removed = torch.ones(32, dtype=torch.bool)
    removed[kept] = False
    assert widened[:, removed].abs().max() == 0


def test_adapter_finds_unsorted_kept_channels_when_inputs_were_pruned_too():
    teacher = nn.Conv2d(24, 40, 3)
    keep_out = torch.randperm(40)[:20]  # unsorted on purpose
    keep_in = half(24)
    student = pruned_conv(teacher, keep_out, keep_in)
    match = match_channels(teacher.weight, student.weight, teacher.bias, student.bias)
    assert match.exact and match.max_abs_diff == 0
    assert list(match.out_index) == keep_out.tolist() and list(match.in_index) == keep_in.tolist()
    adapter = conv2d_adapter(source=teacher, target=student)
    t_out = teacher(torch.randn(1, 24, 5, 5))
    torch.testing.assert_close(adapter(t_out), t_out[:, keep_out], rtol=0, atol=1e-6)


def test_pruned_depthwise_conv_is_matched():
    teacher = nn.Conv2d(16, 16, 3, groups=16)
    kept = half(16)
    student = pruned_conv(teacher, kept)
    assert student.groups == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = conv2d_adapter(source=teacher, target=student)
    assert adapter.weight[:, :, 0, 0].argmax(1).tolist() == kept.tolist()


@pytest.mark.parametrize("noise", [0.01, 0.1])  # relative to the weights' spread
def test_student_trained_after_pruning_is_matched_to_the_nearest_kernels_with_a_warning(noise):
    teacher = nn.Conv2d(16, 32, 3)
    keep_out, keep_in = half(32), half(16)
    student = pruned_conv(teacher, keep_out, keep_in)
    with torch.no_grad():
        student.weight.add_(noise * student.weight.std() * torch.randn_like(student.weight))
    with pytest.warns(UserWarning, match=r"not an exact pruned copy .* matched the nearest kernels"):
        adapter = conv2d_adapter(source=teacher, target=student)
    assert adapter.weight[:, :, 0, 0].argmax(1).tolist() == keep_out.tolist()


def test_unrelated_student_gets_a_one_to_one_selection_and_a_warning():
    teacher, student = nn.Conv2d(8, 12, 3), nn.Conv2d(6, 5, 3)
    with pytest.warns(UserWarning, match="not an exact pruned copy"):
        adapter = conv2d_adapter(source=teacher, target=student)
    weight = adapter.weight[:, :, 0, 0]
    assert torch.equal(weight.sum(1), torch.ones(5))  # each student channel reads one teacher channel
    assert len(set(weight.argmax(1).tolist())) == 5  # and no teacher channel twice


def test_mismatched_kernel_shapes_raise_naming_both_layers():
    teacher, student = nn.Conv2d(4, 8, 3), nn.Conv2d(4, 4, 1)
    with pytest.raises(
        ValueError, match=r"kernel shapes differ between source 'layer3.conv'.*target 'layer3.conv'"
    ):
        conv2d_adapter(source=teacher, target=student, source_name="layer3.conv", target_name="layer3.conv")
    with pytest.raises(ValueError, match=r"source Conv2d\(4, 8, kernel_size=\(3, 3\).*target Conv2d\(4, 4"):
        inverted_conv2d_adapter(source=teacher, target=student)


def test_wider_student_or_wrong_layer_type_is_refused():
    with pytest.raises(ValueError, match=r"student has more output channels \(16\) than the teacher \(8\)"):
        conv2d_adapter(source=nn.Conv2d(4, 8, 3), target=nn.Conv2d(4, 16, 3))
    with pytest.raises(TypeError, match=r"target must be an nn.Conv2d, got Linear"):
        conv2d_adapter(source=nn.Conv2d(4, 8, 3), target=nn.Linear(4, 8))
    with pytest.raises(TypeError, match=r"source must be an nn.Linear, got Conv2d"):
        linear_adapter(source=nn.Conv2d(4, 8, 3), target=nn.Linear(4, 8))


def test_adapters_are_positional_argument_free():
    with pytest.raises(TypeError):
        conv2d_adapter(nn.Conv2d(4, 8, 3), nn.Conv2d(4, 4, 3))  # type: ignore[misc]


def test_linear_adapters_select_and_embed_hidden_features_of_a_pruned_copy():
    teacher = nn.Linear(32, 64)
    keep_out, keep_in = half(64), half(32)
    student = pruned_linear(teacher, keep_out, keep_in)
    hidden = torch.randn(2, 5, 64)  # (batch, tokens, features) as in a transformer
    narrow = linear_adapter(source=teacher, target=student)
    torch.testing.assert_close(narrow(hidden), hidden[..., keep_out], rtol=0, atol=1e-6)
    wide = inverted_linear_adapter(source=teacher, target=student)
    s_hidden = torch.randn(2, 5, 32)
    torch.testing.assert_close(wide(s_hidden)[..., keep_out], s_hidden, rtol=0, atol=1e-6)
    assert wide.weight.shape == (64, 32) and wide.bias is None


def test_adapter_is_trainable_and_follows_the_source_dtype():
    teacher = nn.Conv2d(3, 8, 3).double()
    student = pruned_conv(teacher, half(8)).double()
    adapter = conv2d_adapter(source=teacher, target=student)
    assert adapter.weight.dtype == torch.float64 and adapter.weight.requires_grad
    adapter(teacher(torch.randn(1, 3, 4, 4, dtype=torch.float64))).sum().backward()
    assert adapter.weight.grad is not None


@settings(max_examples=25, deadline=None)
@given(
    out_t=st.integers(2, 24),
    in_t=st.integers(1, 12),
    k=st.sampled_from([1, 3]),
    prune_in=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_match_channels_recovers_any_random_pruning_exactly(out_t, in_t, k, prune_in, seed):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(out_t, in_t, k, k, generator=gen)
    keep_out = torch.randperm(out_t, generator=gen)[: torch.randint(1, out_t + 1, (1,), generator=gen).item()]
    keep_in = torch.arange(in_t)
    if prune_in:
        keep_in = torch.randperm(in_t, generator=gen)[
            : torch.randint(1, in_t + 1, (1,), generator=gen).item()
        ]
        keep_in = keep_in.sort().values
    student = teacher[keep_out][:, keep_in]
    match = match_channels(teacher, student)
    assert match.exact
    torch.testing.assert_close(
        teacher[list(match.out_index)][:, list(match.in_index)], student, rtol=0, atol=0
    )
