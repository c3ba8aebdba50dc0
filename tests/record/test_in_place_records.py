"""A module output changed in place after it was recorded is reported, never read silently."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from torchpare.record import ModuleOutputsRecorder


def _bn_relu(inplace: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(4).eval(), nn.ReLU(inplace=inplace))


@pytest.mark.parametrize("grad", [False, True])
def test_batchnorm_output_overwritten_by_an_in_place_relu_warns_once(grad):
    """torchvision's ResNets: bn -> ReLU(inplace=True). The record of `bn` would hold post-ReLU values."""
    model = _bn_relu(inplace=True)
    recorder = ModuleOutputsRecorder("0")
    recorder.initialize(model)
    x = torch.randn(3, 4, requires_grad=grad)
    with torch.set_grad_enabled(grad), recorder:
        model(x)
    with pytest.warns(UserWarning, match=r"source='0'.*modified in place.*inplace=False"):
        record = recorder.get_record_data()
    assert (record >= 0).all()  # what it holds: the ReLU's result, which is why the warning exists
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recorder.get_record_data()  # once per recorder


def test_outputs_left_alone_read_without_a_warning():
    model = _bn_relu(inplace=False)
    recorder = ModuleOutputsRecorder("0")
    recorder.initialize(model)
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad(), recorder:
            model(x)
        torch.testing.assert_close(recorder.get_record_data(), model[0](x))
