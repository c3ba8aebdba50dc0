"""Connectors: name lookups without eval, FitNets regressor options, OFD margins, FT and AB shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from scipy.stats import norm

from torchpare.distill.connectors import (
    ABConnector,
    ConvModuleConnector,
    FTConnector,
    LinearConnector,
    OFDTeacherConnector,
    TorchFunctionalConnector,
    TorchNNConnector,
    margin_from_bn,
)
from torchpare.registry import CONNECTORS


# -- TorchFunctionalConnector / TorchNNConnector ------------------------------------------------------
def test_torch_functional_connector_applies_named_function_with_args():
    x = torch.randn(2, 3, 4, 4)
    c = TorchFunctionalConnector("adaptive_avg_pool2d", {"output_size": 1})
    torch.testing.assert_close(c(x), x.mean((2, 3), keepdim=True))


def test_torch_functional_connector_suggests_close_name_for_typo():
    with pytest.raises(AttributeError, match="no function 'interpolat'; did you mean 'interpolate'"):
        TorchFunctionalConnector("interpolat")


@pytest.mark.parametrize("name", ["__import__('os').system('true')", "_pad", "torch.nn.functional.relu"])
def test_torch_functional_connector_never_evaluates_strings(name):
    with pytest.raises(AttributeError, match="TorchFunctionalConnector"):
        TorchFunctionalConnector(name)


def test_torch_functional_connector_rejects_non_string_name():
    with pytest.raises(TypeError, match="function must be a string"):
        TorchFunctionalConnector(len)  # type: ignore[arg-type]


def test_torch_nn_connector_builds_module_and_trains_its_parameters():
    c = CONNECTORS.build(
        {"type": "TorchNN", "module_name": "Linear", "module_args": {"in_features": 3, "out_features": 2}}
    )
    assert c(torch.randn(4, 3)).shape == (4, 2)
    assert "module.weight" in c.state_dict()


def test_torch_nn_connector_suggests_close_name_and_rejects_non_modules():
    with pytest.raises(AttributeError, match="did you mean 'Flatten'"):
        TorchNNConnector("Flaten")
    with pytest.raises(TypeError, match=r"torch.nn.Parameter is not a usable module class"):
        TorchNNConnector("Parameter")


def test_torch_nn_connector_reports_bad_module_args():
    with pytest.raises(TypeError, match=r"TorchNNConnector: torch.nn.Flatten\(\*\*\{'dims': 1\}\) failed"):
        TorchNNConnector("Flatten", {"dims": 1})


# -- ConvModuleConnector / LinearConnector -------------------------------------------------------------
def test_conv_module_connector_equals_conv_then_bn_then_relu():
    c = ConvModuleConnector(3, 4, kernel_size=3, padding=1, norm="BN", act="ReLU").eval()
    x = torch.randn(2, 3, 5, 5)
    expected = torch.relu(c.norm(nn.functional.conv2d(x, c.conv.weight, None, padding=1)))
    torch.testing.assert_close(c(x), expected)
    assert c.conv.bias is None  # bias="auto": the norm's shift makes it redundant


def test_conv_module_connector_without_norm_has_bias_and_identity_act():
    c = ConvModuleConnector(3, 4)
    assert c.conv.bias is not None
    assert isinstance(c.norm, nn.Identity) and isinstance(c.act, nn.Identity)


def test_conv_module_connector_rejects_unknown_act_with_suggestion():
    with pytest.raises(AttributeError, match="no activation class 'Relu'; did you mean 'ReLU'\\?"):
        ConvModuleConnector(3, 4, act="Relu")


def test_linear_connector_flattens_feature_maps_when_asked():
    c = LinearConnector(12, 5, flatten=True)
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(c(x), c.linear(x.reshape(2, 12)))


# -- OFDTeacherConnector --------------------------------------------------------------------------------
def _reference_margin(gamma: float, beta: float) -> float:
    """clovaai/overhaul-distillation get_margin_from_BN, with scipy's normal distribution."""
    s, m = abs(gamma), beta
    if norm.cdf(-m / s) > 0.001:
        return -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm.cdf(-m / s) + m
    return -3 * s


def test_margin_from_bn_matches_authors_formula():
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.3, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.2, -1.0, 2.0, 5.0]))  # the last one hits the -3 s branch
    expected = [_reference_margin(g, b) for g, b in zip(bn.weight.tolist(), bn.bias.tolist())]
    assert margin_from_bn(bn).tolist() == pytest.approx(expected, rel=1e-5)


def test_margin_is_expected_negative_part_of_gaussian():
    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.weight.fill_(1.5)
        bn.bias.fill_(0.4)
    samples = torch.randn(200_000, dtype=torch.float64) * 1.5 + 0.4
    assert margin_from_bn(bn).item() == pytest.approx(samples[samples < 0].mean().item(), abs=5e-3)


def test_ofd_teacher_connector_clips_from_below_at_margin():
    c = OFDTeacherConnector(2)
    c.init_margin(torch.tensor([-1.0, -0.5]))
    x = torch.tensor([[[[-3.0]], [[-0.2]]]])
    assert c(x).flatten().tolist() == pytest.approx([-1.0, -0.2])


def test_ofd_teacher_connector_refuses_forward_before_margin_init():
    with pytest.raises(RuntimeError, match="call init_margin_from_bn"):
        OFDTeacherConnector(2)(torch.randn(1, 2, 2, 2))


def test_ofd_teacher_connector_rejects_wrong_channel_counts():
    c = OFDTeacherConnector(3)
    with pytest.raises(ValueError, match="margin has 2 channels"):
        c.init_margin_from_bn(nn.BatchNorm2d(2))
    c.init_margin_from_bn(nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"input of shape \(1, 4, 2, 2\) does not have 3 channels"):
        c(torch.randn(1, 4, 2, 2))


def test_ofd_teacher_connector_without_channels_loads_saved_margin():
    src = OFDTeacherConnector()
    src.init_margin_from_bn(nn.BatchNorm2d(4))
    dst = OFDTeacherConnector()
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(dst(x), src(x))


def test_margin_from_bn_rejects_non_batchnorm():
    with pytest.raises(TypeError, match="margin_from_bn: expected an affine BatchNorm"):
        margin_from_bn(nn.Conv2d(2, 2, 1))


# -- FT / AB ----------------------------------------------------------------------------------------------
def test_ft_paraphraser_reconstructs_input_in_pretrain_and_encodes_in_train():
    p = FTConnector(6, 3, role="paraphraser", use_bn=False, phase="pretrain")
    x = torch.randn(2, 6, 4, 4)
    assert p(x).shape == x.shape
    p.phase = "train"
    torch.testing.assert_close(p(x), p.encoder(x))


def test_ft_translator_has_no_decoder_and_rejects_pretrain():
    assert FTConnector(4, 2).decoder is None
    with pytest.raises(ValueError, match="phase='pretrain' needs role='paraphraser'"):
        FTConnector(4, 2, phase="pretrain")
    with pytest.raises(ValueError, match="role must be one of"):
        FTConnector(4, 2, role="encoder")


def test_ab_connector_is_bias_free_conv_then_batchnorm():
    c = ABConnector(3, 5).eval()
    x = torch.randn(2, 3, 4, 4)
    assert c.conv.bias is None
    torch.testing.assert_close(c(x), c.bn(nn.functional.conv2d(x, c.conv.weight)))
