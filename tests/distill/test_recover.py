"""recover(): distil an original model into its hand-pruned copy through adapters."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchpare.distill.recovery import Recovery, recover
from torchpare.zoo import DigitsCNN, DigitsMLP


def _prune_block(model: DigitsCNN, block: str, consumer: str, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` of ``<block>.conv``/``<block>.bn`` and the matching inputs of ``consumer``."""
    seq = getattr(model, block)
    conv, bn = seq.conv, seq.bn
    new_conv = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, bias=False)
    new_bn = nn.BatchNorm2d(len(keep))
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[keep])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[keep])
    seq.conv, seq.bn = new_conv, new_bn
    old = model.get_submodule(consumer)
    if isinstance(old, nn.Linear):
        new = nn.Linear(len(keep), old.out_features)
        with torch.no_grad():
            new.weight.copy_(old.weight[:, keep])
            new.bias.copy_(old.bias)
    else:
        new = nn.Conv2d(len(keep), old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        with torch.no_grad():
            new.weight.copy_(old.weight[:, keep])
    parent, _, attr = consumer.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def _half(n: int) -> torch.Tensor:
    return torch.randperm(n)[: n // 2].sort().values


def _digits_teacher(steps: int = 30) -> tuple[DigitsCNN, object]:
    from torchpare.datasets import load_digits_split

    split = load_digits_split(seed=0)
    teacher = DigitsCNN(width=8)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(split.x_train)
        optimizer.zero_grad()
        F.cross_entropy(teacher(split.x_train[idx]), split.y_train[idx]).backward()
        optimizer.step()
    return teacher.eval(), split


@pytest.fixture
def pruned_pair() -> tuple[DigitsCNN, DigitsCNN, torch.Tensor, torch.Tensor]:
    """DigitsCNN(width=8) with layer1 (16 -> 8) and layer2 (32 -> 16) channel-pruned by hand."""
    teacher = DigitsCNN(width=8)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong BN slice would show
        for bn in (m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    student = copy.deepcopy(teacher)
    keep1, keep2 = _half(16), _half(32)
    _prune_block(student, "layer1", "layer2.conv", keep1)
    _prune_block(student, "layer2", "layer3.conv", keep2)
    return student, teacher, keep1, keep2


def test_adapters_are_inserted_exactly_where_channel_counts_differ(pruned_pair):
    student, teacher, keep1, _ = pruned_pair
    recovery = recover(student, teacher)
    assert isinstance(recovery, Recovery)
    assert recovery.layers == ["layer1.conv", "layer2.conv"]  # stem, layer3 (inputs only) and fc kept width
    a1, a2 = recovery.adapter("layer1.conv"), recovery.adapter("layer2.conv")
    assert (a1.in_channels, a1.out_channels) == (16, 8) and (a2.in_channels, a2.out_channels) == (32, 16)
    assert a1.weight[:, :, 0, 0].argmax(1).tolist() == keep1.tolist()
    assert sorted(dict(recovery.adapters.named_children())) == ["layer1__conv", "layer2__conv"]
    with pytest.raises(KeyError, match=r"'layer3.conv' is not a distilled layer"):
        recovery.adapter("layer3.conv")


def test_initial_feature_loss_is_zero_at_the_first_pruned_layer_only(pruned_pair):
    student, teacher, _, _ = pruned_pair
    recovery = recover(student, teacher).eval()  # eval: both models normalise with running statistics
    losses = recovery.loss(torch.rand(16, 1, 8, 8))
    # layer1.conv reads unpruned inputs: adapter(teacher_out) equals the student's output exactly
    assert losses["distill.loss_layer1.conv"].item() < 1e-12
    # layer2.conv reads only the kept half of layer1: its kept channels no longer equal the teacher's
    assert losses["distill.loss_layer2.conv"].item() > 1e-3


def test_a_pruned_stem_matches_even_in_train_mode():
    teacher = DigitsCNN(width=8)
    student = copy.deepcopy(teacher)
    _prune_block(student, "stem", "layer1.conv", _half(8))
    recovery = recover(student, teacher, logits_loss=None).train()
    assert recovery.layers == ["stem.conv"]
    losses = recovery.loss(torch.rand(8, 1, 8, 8))
    assert list(losses) == ["distill.loss_stem.conv"] and losses["distill.loss_stem.conv"].item() < 1e-12


def test_fine_tuning_steps_reduce_the_loss_and_leave_the_teacher_unchanged():
    teacher, split = _digits_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = copy.deepcopy(teacher)
    _prune_block(student, "layer1", "layer2.conv", _half(16))
    _prune_block(student, "layer2", "layer3.conv", _half(32))
    recovery = recover(student, teacher).train()
    optimizer = torch.optim.Adam(recovery.parameters(), lr=5e-3)
    totals = []
    for step in range(30):
        idx = torch.arange(step * 64, step * 64 + 64) % len(split.x_train)
        losses = recovery.loss(split.x_train[idx], split.y_train[idx])
        total = recovery.total_loss(losses)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5, totals
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"teacher {key} changed")


def test_loss_keys_follow_the_algorithm_contract(pruned_pair):
    student, teacher, _, _ = pruned_pair
    recovery = recover(student, teacher)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    losses = recovery.loss(x, y)
    assert sorted(losses) == [
        "distill.loss_layer1.conv",
        "distill.loss_layer2.conv",
        "distill.loss_logits",
        "student.loss",
    ]
    recovery.total_loss(losses).backward()
    assert "student.loss" not in recovery.loss(x)
    torch.testing.assert_close(recovery(x), student(x))


def test_parameters_are_the_student_and_adapters_and_the_teacher_is_frozen(pruned_pair):
    student, teacher, _, _ = pruned_pair
    recovery = recover(student, teacher)
    expected = {id(p) for p in student.parameters()} | {id(p) for p in recovery.adapters.parameters()}
    assert {id(p) for p in recovery.parameters()} == expected
    assert all(k.startswith(("student.", "adapters.")) for k in recovery.state_dict())
    assert not any(p.requires_grad for p in teacher.parameters())
    recovery.train()
    assert not teacher.training
    recovery.double()
    assert (
        teacher.fc.weight.dtype == torch.float64
        and recovery.adapter("layer1.conv").weight.dtype == torch.float64
    )


def test_pruned_mlp_gets_a_linear_adapter_and_starts_at_zero_loss():
    teacher = DigitsMLP(hidden=16)
    student = copy.deepcopy(teacher)
    keep = _half(16)
    student.fc1 = nn.Linear(64, 8)
    student.fc2 = nn.Linear(8, 10)
    with torch.no_grad():
        student.fc1.weight.copy_(teacher.fc1.weight[keep])
        student.fc1.bias.copy_(teacher.fc1.bias[keep])
        student.fc2.weight.copy_(teacher.fc2.weight[:, keep])
        student.fc2.bias.copy_(teacher.fc2.bias)
    recovery = recover(student, teacher)
    assert recovery.layers == ["fc1"] and isinstance(recovery.adapter("fc1"), nn.Linear)
    losses = recovery.loss(torch.rand(5, 1, 8, 8))
    assert losses["distill.loss_fc1"].item() < 1e-12
    assert losses["distill.loss_logits"].item() > 0  # the logits lost the pruned units' contributions


def test_layers_chosen_by_name_get_no_adapter_where_widths_agree(pruned_pair):
    student, teacher, _, _ = pruned_pair
    recovery = recover(
        student, teacher, layers=["layer3.conv", "layer1.conv"], criterion="l1", logits_loss=None
    )
    assert recovery.layers == ["layer3.conv", "layer1.conv"]
    assert recovery.adapter("layer3.conv") is None and recovery.adapter("layer1.conv") is not None
    assert sorted(recovery.loss(torch.rand(2, 1, 8, 8))) == [
        "distill.loss_layer1.conv",
        "distill.loss_layer3.conv",
    ]


def test_unknown_layer_name_raises_naming_it(pruned_pair):
    student, teacher, _, _ = pruned_pair
    with pytest.raises(KeyError, match=r"'layer1.cnv' is not a module of the pruned model.*'layer1.conv'"):
        recover(student, teacher, layers=["layer1.cnv"])


def test_misuse_is_refused_with_a_clear_message(pruned_pair):
    student, teacher, _, _ = pruned_pair
    with pytest.raises(ValueError, match=r"same object; prune a copy"):
        recover(teacher, teacher)
    with pytest.raises(ValueError, match=r"nothing to distil"):
        recover(copy.deepcopy(teacher), teacher, logits_loss=None)
    with pytest.raises(TypeError, match=r"criterion must be a callable"):
        recover(student, teacher, criterion=3)
    other = copy.deepcopy(student)
    other.layer1.bn = nn.Conv2d(8, 8, 1)
    with pytest.raises(ValueError, match=r"'layer1.bn' is a Conv2d in the pruned model and a BatchNorm2d"):
        recover(other, teacher, layers=["layer1.bn"])


def test_width_mismatch_without_adapter_is_reported_at_the_first_step(pruned_pair):
    student, teacher, _, _ = pruned_pair
    recovery = recover(student, teacher, layers=["layer1.bn"])  # norms get no adapter
    with pytest.raises(
        ValueError, match=r"layer 'layer1.bn': student output \(4, 8, 8, 8\) vs teacher \(4, 16"
    ):
        recovery.loss(torch.rand(4, 1, 8, 8))


def test_frozen_adapters_stay_the_exact_selection(pruned_pair):
    student, teacher, keep1, _ = pruned_pair
    recovery = recover(student, teacher, train_adapters=False)
    assert {id(p) for p in recovery.trainable_parameters()} == {id(p) for p in student.parameters()}
    optimizer = torch.optim.SGD(recovery.trainable_parameters(), lr=0.1)
    recovery.total_loss(recovery.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))).backward()
    optimizer.step()
    assert recovery.adapter("layer1.conv").weight[:, :, 0, 0].argmax(1).tolist() == keep1.tolist()
    assert recovery.adapter("layer1.conv").weight.sum().item() == len(keep1)


def test_model_pruned_by_torchpare_gets_exact_adapters_on_every_pruned_conv():
    from torchpare.prune import prune

    teacher = DigitsCNN(width=8).eval()
    x = torch.rand(4, 1, 8, 8)
    pruned, _ = prune(copy.deepcopy(teacher), x, importance="l1", target_flops_ratio=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an inexact match would warn: every adapter must be exact
        recovery = recover(pruned, teacher).eval()
    narrowed = [n for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)]
    narrowed = [
        n for n in narrowed if pruned.get_submodule(n).out_channels < teacher.get_submodule(n).out_channels
    ]
    assert recovery.layers == narrowed and narrowed
    first = narrowed[0]  # the first pruned conv reads complete inputs: exact before any training
    assert recovery.loss(x)[f"distill.loss_{first}"].item() < 1e-12
