"""Module lookups by dotted path: fast on success, helpful on failure."""

from __future__ import annotations

import pytest
from torch import nn

from torchpare._utils import get_submodule


class _CountsWalks(nn.Sequential):
    walks = 0

    def named_modules(self, *args, **kwargs):
        type(self).walks += 1
        return super().named_modules(*args, **kwargs)


def test_found_submodule_does_not_walk_the_model():
    """The surgery looks modules up thousands of times; each walk of the whole model cost prune() ~1/3."""
    net = _CountsWalks(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    assert get_submodule(net, "1.1") is net[1][1]
    assert get_submodule(net, "") is net
    assert _CountsWalks.walks == 0


def test_missing_submodule_names_the_path_and_the_nearest_name():
    net = nn.Sequential()
    net.add_module("layer3", nn.Linear(2, 2))
    with pytest.raises(AttributeError, match=r"prune: no module 'layr3'.*did you mean 'layer3'"):
        get_submodule(net, "layr3", who="prune")
