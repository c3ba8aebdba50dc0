"""The engine's data entry is generic: any DATASETS entry returning a DataBundle trains through a config."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from torchpare.datasets import DataBundle, DigitsData, digits_data, load_digits_split
from torchpare.engine.data import build_data
from torchpare.engine.runner import run_task
from torchpare.registry import DATASETS, BuildError


@DATASETS.register(aliases=("tiny_blobs",))
def _tiny_blobs(n: int = 96, seed: int = 0) -> DataBundle:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 8, 8, generator=gen) * 0.1 + y.view(-1, 1, 1, 1).float()
    ds = TensorDataset(x, y)
    return DataBundle(train=ds, val=ds, test=ds, example=x[:1])


@DATASETS.register()
def _not_a_bundle() -> dict:
    return {"train": None}


def test_a_user_dataset_named_in_a_config_trains_and_is_evaluated(tmp_path: Path) -> None:
    cfg = {"data": {"type": "tiny_blobs", "n": 64}, "model": {"type": "DigitsMLP", "hidden": 8},
           "schedule": {"epochs": 2, "batch_size": 16, "lr": 0.05, "quiet": True}, "output": str(tmp_path / "run")}
    entry = run_task(cfg, "train", quiet=True)
    assert entry["accuracy"] > 0.9  # two well-separated blobs
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["models"][0]
    assert saved["flops"] > 0 and saved["params"] == entry["params"]


def test_build_data_defaults_to_digits_with_the_old_split_and_label_mask() -> None:
    bundle = build_data(None)
    old = DigitsData(load_digits_split(seed=0), 1.0)
    assert isinstance(bundle, DigitsData) and isinstance(bundle, DataBundle)
    assert torch.equal(bundle.train.tensors[0], old.train.tensors[0])
    scarce = build_data({"type": "digits", "seed": 0, "label_fraction": 0.1, "batch_size": 32})
    assert torch.equal(scarce.train.tensors[1], digits_data(0, label_fraction=0.1).train.tensors[1])
    assert int((scarce.train.tensors[1] >= 0).sum()) == len(scarce.train_labelled_only)
    assert scarce.example.shape == (1, 1, 8, 8) and scarce.batch.shape == (64, 1, 8, 8)


def test_a_dataset_that_returns_no_bundle_is_named_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"'_not_a_bundle' returned a dict, not a DataBundle; register a function"):
        build_data({"type": "_not_a_bundle"})


def test_wrong_dataset_argument_names_the_valid_ones() -> None:
    with pytest.raises(BuildError, match=r"unexpected argument 'path'.*Valid arguments: seed, fractions, label_fraction"):
        build_data({"type": "digits", "path": "x.csv"})


@pytest.mark.parametrize("module,name", [
    ("torchpare.engine.data", "load_digits_split"),
    ("torchpare.engine.data", "digits_loaders"),
    ("torchpare.engine.data", "DigitsSplit"),
    ("torchpare.engine.runner", "DigitsData"),
    ("torchpare.engine.runner", "mask_labels"),
])
def test_old_data_paths_warn_and_give_the_moved_object(module: str, name: str) -> None:
    import importlib

    import torchpare.datasets

    mod = importlib.import_module(module)
    with pytest.warns(FutureWarning, match=rf"{module}.{name} moved to torchpare.datasets.{name}"):
        old = getattr(mod, name)
    assert old is getattr(torchpare.datasets, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from torchpare.engine.data import DataBundle as _  # noqa: F401  (the new names do not warn)
