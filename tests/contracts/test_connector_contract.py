"""Every registered connector: builds from a dict, maps to the documented shape, and round-trips through
``state_dict`` into a freshly built instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn

import torchpare.distill.connectors as connectors_pkg
from torchpare.registry import CONNECTORS


def _init_ofd(module: nn.Module) -> None:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    module.init_margin_from_bn(bn)


# name -> (kwargs, input shape, expected output shape, optional set-up after build)
CASES: dict[
    str, tuple[dict[str, Any], tuple[int, ...], tuple[int, ...], Callable[[nn.Module], None] | None]
] = {
    "ConvModuleConnector": (
        {"in_channels": 3, "out_channels": 6, "norm": "BN", "act": "ReLU"},
        (2, 3, 5, 5),
        (2, 6, 5, 5),
        None,
    ),
    "LinearConnector": ({"in_features": 12, "out_features": 7, "flatten": True}, (2, 3, 4), (2, 7), None),
    "TorchFunctionalConnector": (
        {"function_name": "interpolate", "func_args": {"size": (6, 6)}},
        (2, 3, 3, 3),
        (2, 3, 6, 6),
        None,
    ),
    "TorchNNConnector": ({"module_name": "Flatten"}, (2, 3, 2, 2), (2, 12), None),
    "FTConnector": ({"in_channels": 4, "out_channels": 2}, (2, 4, 5, 5), (2, 2, 5, 5), None),
    "ABConnector": ({"in_channels": 3, "out_channels": 4}, (2, 3, 5, 5), (2, 4, 5, 5), None),
    "OFDTeacherConnector": ({"channels": 4}, (2, 4, 3, 3), (2, 4, 3, 3), _init_ofd),
}

NAMES = CONNECTORS.names()


def _build(name: str, seed: int) -> nn.Module:
    kwargs, _, _, setup = CASES[name]
    torch.manual_seed(seed)
    module = CONNECTORS.build({"type": name, **kwargs})
    if setup is not None and seed == 0:
        setup(module)
    return module


def test_every_registered_connector_has_a_contract_case_and_is_exported():
    assert sorted(CASES) == NAMES
    assert set(NAMES) <= set(connectors_pkg.__all__)


@pytest.mark.parametrize("name", NAMES)
def test_connector_builds_from_dict_and_maps_to_expected_shape(name):
    module = _build(name, 0)
    assert isinstance(module, nn.Module)
    out = module(torch.randn(*CASES[name][1]))
    assert tuple(out.shape) == CASES[name][2]


@pytest.mark.parametrize("name", NAMES)
def test_connector_state_dict_round_trip_reproduces_outputs(name):
    trained = _build(name, 0)
    x = torch.randn(*CASES[name][1])
    trained.train()
    trained(x)  # move BN running stats away from their defaults
    fresh = _build(name, 1)
    fresh.load_state_dict(trained.state_dict())
    trained.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), trained(x))


@pytest.mark.parametrize("name", NAMES)
def test_connector_backprops_to_its_input(name):
    module = _build(name, 0)
    x = torch.randn(*CASES[name][1], requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
