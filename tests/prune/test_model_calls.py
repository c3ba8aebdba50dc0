"""prune's counting and calibration call a model by torchpare.model_io.call_model's rule: a tensor is
``model(x)``, a tuple or a list ``model(*x)``, a dict ``model(**x)`` (the tracer's rule too)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpare.prune import count, recalibrate_bn


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(5, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x) + self.b(y))


@pytest.mark.parametrize("layout", ["tuple", "list", "dict"])
def test_count_calls_the_model_with_every_input_layout(layout: str) -> None:
    x, y = torch.randn(2, 4), torch.randn(2, 5)
    inputs = {"tuple": (x, y), "list": [x, y], "dict": {"x": x, "y": y}}[layout]
    out = count(TwoInputs().eval(), inputs)
    assert out["flops"] == count(TwoInputs().eval(), (x, y))["flops"] > 0


def test_recalibrate_bn_feeds_tuple_list_and_dict_inputs_of_pairs() -> None:
    x, y = torch.randn(8, 4) + 3.0, torch.randn(8, 5)
    for batch in [((x, y), None), ([x, y], None), ({"x": x, "y": y}, None), {"x": x, "y": y}]:
        model = TwoInputs()
        recalibrate_bn(model, [batch])
        with torch.no_grad():
            expected = (model.a(x) + model.b(y)).mean(0)
        torch.testing.assert_close(model.bn.running_mean, expected, atol=1e-5, rtol=1e-5)
