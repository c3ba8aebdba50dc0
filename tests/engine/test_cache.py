"""TeacherCache: cached distillation losses equal live ones exactly; views never share outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from torchpare.demo.digits import at_kd_distiller
from torchpare.engine.augment import AugmentedViews, random_shift
from torchpare.engine.cache import CachedObjective, CacheMismatchError, TeacherCache
from torchpare.engine.trainer import fetch_batch
from torchpare.registry import ALGORITHMS
from torchpare.zoo import DigitsCNN, DigitsSmallCNN


def _algo(student: torch.nn.Module, teacher: torch.nn.Module) -> torch.nn.Module:
    return ALGORITHMS.build({"type": "SingleTeacherDistill", "student": student, "teacher": teacher,
                             "distiller": at_kd_distiller()})


@pytest.fixture
def setup(tmp_path: Path):
    teacher = DigitsCNN(width=4).eval()
    student = DigitsSmallCNN(width=2)
    data = AugmentedViews(TensorDataset(torch.rand(12, 1, 8, 8), torch.arange(12) % 10), random_shift, num_views=2)
    cache = TeacherCache(teacher, tmp_path / "cache", num_samples=12, num_views=2, sources=("layer3", "fc"))
    live = _algo(copy.deepcopy(student), teacher)
    cached = CachedObjective(_algo(copy.deepcopy(student), cache.as_module()), cache)
    return data, cache, live, cached


def test_cached_losses_equal_live_losses_exactly_on_miss_and_on_hit(setup) -> None:
    data, cache, live, cached = setup
    batches = [[3, 1, 7, 0], [2, 11, 5, 9]]
    for _ in range(2):  # pass 1 fills the cache, pass 2 reads it
        for epoch in (0, 1):
            data.set_epoch(epoch)
            for b in batches:
                batch = fetch_batch(data, b)
                want = live.loss(batch["inputs"], batch["targets"])
                got = cached.loss(batch["inputs"], batch["targets"], indices=batch["indices"], view=batch["view"])
                assert want.keys() == got.keys()
                for k in want:
                    assert torch.equal(want[k], got[k]), k
    assert cache.misses == 4 and cache.hits == 4
    assert cache.filled_fraction == pytest.approx(16 / 24)  # 8 samples x 2 views of 12 x 2


def test_each_augmented_view_gets_its_own_teacher_outputs(setup) -> None:
    data, cache, _, _ = setup
    outs = {}
    for view in (0, 1):
        data.set_epoch(view)
        batch = fetch_batch(data, [4, 6])
        cache.outputs(batch["inputs"], batch["indices"], view)
        outs[view] = cache.outputs(torch.zeros_like(batch["inputs"]), batch["indices"], view)["fc"]
        with torch.no_grad():
            assert torch.equal(outs[view], cache.teacher(batch["inputs"]))
    assert not torch.equal(outs[0], outs[1])


def test_cache_of_another_teacher_is_refused(tmp_path: Path) -> None:
    TeacherCache(DigitsCNN(width=4), tmp_path, num_samples=4)
    with pytest.raises(CacheMismatchError, match="teacher differ"):
        TeacherCache(DigitsCNN(width=4), tmp_path, num_samples=4)


def test_cache_is_reused_from_disk_by_a_new_instance(tmp_path: Path) -> None:
    teacher = DigitsCNN(width=4).eval()
    x, idx = torch.rand(3, 1, 8, 8), torch.tensor([0, 2, 3])
    first = TeacherCache(teacher, tmp_path, num_samples=4).outputs(x, idx)[""]
    again = TeacherCache(teacher, tmp_path, num_samples=4)
    assert torch.equal(again.outputs(torch.zeros_like(x), idx)[""], first) and again.hits == 1


def test_view_out_of_range_names_the_limit(tmp_path: Path) -> None:
    cache = TeacherCache(DigitsCNN(width=4), tmp_path, num_samples=4, num_views=2)
    with pytest.raises(IndexError, match="view 2 out of range; this cache holds 2 view"):
        cache.outputs(torch.rand(1, 1, 8, 8), torch.tensor([0]), view=2)
