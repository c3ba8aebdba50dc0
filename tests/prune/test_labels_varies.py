"""``varies_along`` (taken by element-wise and reduction rules on every activation) against its definition."""

from __future__ import annotations

import torch

from torchpare.prune.labels import NEUTRAL, varies_along


def _by_definition(lab: torch.Tensor, d: int) -> bool:
    if lab.dim() == 0 or lab.shape[d] <= 1:
        return False
    first = lab.narrow(d, 0, 1)
    return not bool(((lab == first) | (lab == NEUTRAL) | (first == NEUTRAL)).all())


def test_varies_along_matches_its_definition_on_random_labels():
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        shape = tuple(
            int(v)
            for v in torch.randint(1, 4, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen)
        )
        lab = torch.randint(-1, 3, shape, generator=gen)
        for d in range(lab.dim()):
            assert varies_along(lab, d) == _by_definition(lab, d), (lab, d)


def test_varies_along_sees_a_difference_away_from_the_first_line():
    lab = torch.zeros(3, 4, dtype=torch.int64)
    lab[2, 3] = 5  # the first line along dim 1 (row 0) is constant: the whole tensor must be read
    assert varies_along(lab, 1) and varies_along(lab, 0)
    lab[0, 0] = NEUTRAL  # a neutral first entry never decides alone
    assert varies_along(lab, 1)
