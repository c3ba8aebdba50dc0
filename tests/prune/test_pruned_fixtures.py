"""Saved pruned models (``tests/fixtures/pruned``, written by ``tests/fixtures/make_pruned_fixtures.py``)
load into a freshly built original and give the outputs saved with them.

The files were made once and are committed: they keep loading whatever the tracer (or the installed
transformers release) does to group ids, because the record names modules, tensors and kept indices.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from torchpare.prune import load_pruned
from torchpare.prune.graph import DependencyGraph
from torchpare.zoo.catalog import build_zoo_model

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pruned"
NAMES = ["resnet", "hf_bert"]


def _load(name: str):
    if name.startswith("hf_"):
        pytest.importorskip("transformers")
    model, _ = build_zoo_model(name)
    folder = FIXTURES / name
    tensors = load_file(str(folder / "io.safetensors"))
    inputs = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("input.")} or tensors["input"]
    return load_pruned(folder, model.eval()), inputs, tensors["output"]


def _run(model, inputs):
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("name", NAMES)
def test_saved_pruned_fixture_loads_and_gives_the_saved_outputs(name):
    model, inputs, expected = _load(name)
    torch.testing.assert_close(_run(model, inputs), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_records_name_modules_and_kept_indices_not_group_ids(name):
    record = json.loads((FIXTURES / name / "pruning.json").read_text())
    assert record["format_version"] == 2
    slices = [s for step in record["steps"] for s in step["slices"]]
    assert slices and all({"module", "tensor", "dim", "size", "kept", "via"} <= set(s) for s in slices)
    assert not any("#" in s["module"] for s in slices)  # "...query#heads" is a traced group id


def test_fixture_loads_without_tracing(monkeypatch):
    def no_trace(*args, **kwargs):
        raise AssertionError("load_pruned traced the model")

    monkeypatch.setattr(DependencyGraph, "build", classmethod(no_trace))
    model, inputs, expected = _load("resnet")
    torch.testing.assert_close(_run(model, inputs), expected, atol=1e-5, rtol=0)


def test_hf_fixture_loads_when_group_ids_change(monkeypatch):
    """A transformers release that names the head groups differently must not matter."""
    pytest.importorskip("transformers")
    from torchpare.prune.graph import dependency

    real = dependency.build_groups

    def renamed(ctx):
        return [dataclasses.replace(g, id=g.id.replace("#heads", "#attention_heads")) for g in real(ctx)]

    monkeypatch.setattr(dependency, "build_groups", renamed)
    fresh, example = build_zoo_model("hf_bert")
    assert any(g.id.endswith("#attention_heads") for g in DependencyGraph.build(fresh, example).groups())
    model, inputs, expected = _load("hf_bert")
    torch.testing.assert_close(_run(model, inputs), expected, atol=1e-5, rtol=0)


def test_fixture_metadata_names_the_versions_it_was_made_with():
    with safe_open(str(FIXTURES / "hf_bert" / "io.safetensors"), "pt") as f:
        meta = f.metadata()
    assert {"torch", "transformers"} <= set(meta)


def test_fixtures_stay_small():
    assert sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file()) < 200 * 1024
