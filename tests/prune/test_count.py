"""count(): parameters without buffers, FLOPs = 2 * MACs as FlopCounterMode reports them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpare.prune import count


def test_linear_flops_are_two_times_macs_and_params_include_bias() -> None:
    result = count(nn.Linear(5, 7), torch.zeros(3, 5))
    assert result == {"params": 5 * 7 + 7, "flops": 2 * 3 * 5 * 7}


def test_conv2d_flops_match_hand_computed_value_with_stride_and_groups() -> None:
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2)
    result = count(conv, torch.zeros(2, 4, 9, 9))
    h_out = w_out = 5  # floor((9 + 2 - 3) / 2) + 1
    macs = 2 * h_out * w_out * 6 * (4 // 2) * 3 * 3
    assert result == {"params": 6 * 2 * 3 * 3 + 6, "flops": 2 * macs}


def test_params_exclude_batchnorm_buffers_and_norm_adds_no_flops() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
    result = count(model.eval(), torch.zeros(1, 1, 3, 3))
    assert result["params"] == 2 + 2 + 2  # conv weight, bn weight, bn bias; running stats are buffers
    assert result["flops"] == 2 * 9 * 2 * 1


def test_shared_parameters_count_once_but_each_call_counts_flops() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    assert count(Twice(), torch.zeros(1, 4)) == {"params": 16, "flops": 2 * 2 * 16}


def test_tuple_and_dict_inputs_are_unpacked() -> None:
    class Add(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + b

    x = torch.zeros(1, 2)
    assert count(Add(), (x, x)) == count(Add(), {"a": x, "b": x})


def test_count_does_not_change_the_model_or_leave_grad_state() -> None:
    model = nn.Linear(3, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count(model, torch.zeros(1, 3))
    assert torch.is_grad_enabled()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_non_module_raises_type_error_naming_the_type() -> None:
    with pytest.raises(TypeError, match="nn.Module, got function"):
        count(lambda x: x, torch.zeros(1))


def test_count_is_the_function_even_after_every_prune_submodule_is_imported():
    import importlib
    import pkgutil

    import torchpare.prune as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix="torchpare.prune."):
        importlib.import_module(info.name)
    from torchpare.prune import count as count_again

    assert callable(count_again) and count_again.__name__ == "count"


def test_deberta_v2_with_relative_attention_counts() -> None:
    pytest.importorskip("transformers")
    from torchpare.zoo.hf import hf_tiny

    model, inputs = hf_tiny("deberta_v2")  # its layer norm is handed the relative-position table
    model.classifier.bias.requires_grad_(False)
    result = count(model, inputs)  # failed: "Expected gradient function to be set"
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["flops"] > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["classifier.bias"]  # the flags are restored, a frozen one stays frozen
