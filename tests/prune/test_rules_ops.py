"""Function rules: broadcasting, reductions, padding, slicing and reshapes seen through small nets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune import DependencyGraph


class Wrap(nn.Module):
    """``head(f(stem(x)))`` for a function ``f`` under test."""

    def __init__(self, f, c_in: int = 4, c_head: int = 4, conv: bool = True) -> None:
        super().__init__()
        self.f = f
        layer = nn.Conv2d if conv else nn.Linear
        self.stem = layer(3, c_in, 1) if conv else layer(3, c_in)
        self.head = layer(c_head, 2, 1) if conv else layer(c_head, 2)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.head(self.f(self, self.stem(x)))


def _stem(f, x=None, **kw):
    conv = kw.get("conv", True)
    x = torch.randn(2, 3, 4, 4) if conv else torch.randn(2, 3)
    return DependencyGraph.build(Wrap(f, **kw).eval(), x).group("stem")


def test_scalar_parameter_broadcast_over_channels_couples_nothing():
    g = _stem(lambda m, h: h * m.scale)
    assert g.blocked_by is None and g.size == 4 and g.exact


def test_outer_product_broadcast_is_blocked():
    g = _stem(lambda m, h: (h[:, :, None] * h[:, None]).sum(2), conv=False, c_head=4)
    assert g.blocked_by is not None and "outer-product" in g.blocked_by


def test_mean_over_channels_makes_the_group_inexact():
    g = _stem(lambda m, h: h - h.mean(1, keepdim=True))
    assert g.blocked_by is None and not g.exact


def test_softmax_over_channels_is_inexact_but_over_space_is_exact():
    assert not _stem(lambda m, h: h.softmax(1)).exact
    assert _stem(lambda m, h: h.flatten(2).softmax(-1).view_as(h)).exact


def test_spatial_pad_keeps_channels_and_channel_pad_blocks():
    assert _stem(lambda m, h: F.pad(h, (1, 1, 1, 1))[..., 1:-1, 1:-1]).blocked_by is None
    g = _stem(lambda m, h: F.pad(h, (0, 0, 0, 0, 0, 1)), c_head=5)
    assert "mixes positions that carry channels" in g.blocked_by


def test_slicing_part_of_the_channels_is_blocked():
    g = _stem(lambda m, h: h[:, :2], c_head=2)
    assert "selects part of the channels by position" in g.blocked_by


def test_reshape_splitting_channels_into_heads_is_blocked():
    g = _stem(lambda m, h: h.view(2, 2, 2).transpose(1, 2).reshape(2, 4), conv=False)
    assert "reshape splits channels over several dims" in g.blocked_by


def test_pools_and_interpolate_keep_channels_exact():
    g = _stem(lambda m, h: F.interpolate(F.max_pool2d(F.avg_pool2d(h, 2), 1), scale_factor=2.0))
    assert g.blocked_by is None and g.exact


def test_activation_matmul_contracting_channels_is_inexact():
    g = _stem(lambda m, h: (h.unsqueeze(1) @ h.unsqueeze(2)).squeeze(2).expand(-1, 4), conv=False)
    assert g.blocked_by is None and not g.exact


def test_sum_over_spatial_dims_keeps_channels():
    g = _stem(lambda m, h: h.sum(dim=(2, 3), keepdim=True).amax(-1, keepdim=True))
    assert g.blocked_by is None and g.exact and g.size == 4


def test_prelu_weights_follow_their_channels_and_glu_couples_its_halves():
    import copy

    from torchpare.prune import verify_pruning

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.PReLU(8), nn.GLU(dim=1), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    g = graph.group("0")
    assert g.size == 4 and ("1", "weight", 0) in {(m.module_name, m.param_name, m.dim) for m in g.members}
    original = copy.deepcopy(model)
    graph.prune({"0": [1]})
    assert model[1].weight.shape == (6,) and model[3].in_channels == 3
    assert model[1].num_parameters == 6  # the count shown by repr follows the weight
    assert verify_pruning(original, model, x, {"0": [1]}) <= 1e-5
