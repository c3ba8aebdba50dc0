"""Pruned Hugging Face models of every architecture in ``torchpare.zoo.hf.HF_TINY`` save and reload.

Each tiny model loses one head of every head group and four units of every other prunable group
(four keeps the MoE experts' grouped-matmul strides 16-byte aligned), then goes through both file
formats: ``save_pruned``/``load_pruned`` (replayed onto a fresh unpruned instance) and
``save_pretrained``/``from_pretrained`` (rebuilt from the folder alone). The reloaded model's outputs
equal the pruned model's within 1e-5.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from torchpare.prune import (  # noqa: E402
    from_pretrained,
    load_pruned,
    prune_by_plan,
    save_pretrained,
    save_pruned,
)
from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.zoo.hf import HF_TINY, hf_tiny  # noqa: E402


def _outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    return [v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _fresh(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return hf_tiny(name)


def _pruned(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model, inputs = _fresh(name)
    before = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = DependencyGraph.build(model, inputs)
        plan = {
            g.id: list(range(4)) if g.size >= 8 else [0]
            for g in graph.groups()
            if g.blocked_by is None and g.size > 1
        }
        prune_by_plan(model, inputs, plan)
    assert sum(p.numel() for p in model.parameters()) < before
    return model, inputs


def _assert_same_outputs(got: torch.nn.Module, want: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    ref, out = _outputs(want, inputs), _outputs(got, inputs)
    assert ref and len(ref) == len(out)
    for a, b in zip(ref, out):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(HF_TINY))
def test_pruned_model_saves_and_reloads_in_both_formats(name: str, tmp_path: Path) -> None:
    model, inputs = _pruned(name)
    save_pruned(model, tmp_path / "pruned")
    fresh, _ = _fresh(name)
    _assert_same_outputs(load_pruned(tmp_path / "pruned", fresh), model, inputs)
    save_pretrained(model, tmp_path / "pretrained")
    reloaded = from_pretrained(tmp_path / "pretrained")
    assert type(reloaded) is type(model)
    _assert_same_outputs(reloaded, model, inputs)
