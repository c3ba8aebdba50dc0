"""The layout of ``torchpare.prune`` after the renovation: one surgery entry point, one resolver for
``ignored``, and the old import paths still working with a ``FutureWarning``."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from torch import nn

import torchpare.prune.surgery as surgery
from torchpare.prune import (
    DependencyGraph,
    IgnoredModuleError,
    RandomPruner,
    StructurePruner,
    deploy_subnet,
    load_pruned,
    prune,
    prune_by_plan,
    prune_group,
    pruning_record,
    save_pruned,
)
from torchpare.prune.io import PruningFileError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))


X = torch.randn(3, 4)


# -- one surgery entry point -----------------------------------------------------------------------
def _count_surgeries(monkeypatch) -> list[dict[str, list[int]]]:
    calls: list[dict[str, list[int]]] = []
    real = surgery.plan_edits

    def spy(graph, plan):
        calls.append(dict(plan))
        return real(graph, plan)

    monkeypatch.setattr(surgery, "plan_edits", spy)
    return calls


def test_every_way_to_prune_goes_through_surgery_apply_plan(monkeypatch):
    calls = _count_surgeries(monkeypatch)
    graph = DependencyGraph.build(_net(), X)
    graph.prune({"0": [0]})
    prune_group(graph, "2", [1])
    surgery.apply_plan(graph, {"0": [1]})
    prune_by_plan(_net(), X, {"0": [0]})
    with pytest.warns(FutureWarning, match="prune_by_plan"):
        importlib.import_module("torchpare.prune.io").apply_plan(_net(), X, {"0": [0]})
    supernet = _net()
    pruner = RandomPruner(supernet, X)
    pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(0)))
    deploy_subnet(_net(), pruner.export_subnet())
    assert len(calls) >= 7  # export_subnet deploys a copy too
    n = len(calls)
    prune(_net(), X, target_params_ratio=0.6, tolerance=0.5)
    assert len(calls) > n  # the trials and the final step


def test_apply_plan_records_only_when_asked_and_returns_the_normalized_plan():
    model = _net()
    graph = DependencyGraph.build(model, X)
    assert surgery.apply_plan(graph, {"0": torch.tensor([5, 1, 5])}) == {"0": [1, 5]}
    assert not hasattr(model, "_torchpare_pruning")
    model = _net()
    graph = DependencyGraph.build(model, X)
    surgery.apply_plan(graph, {graph.group("0"): [0]}, retrace=True, record=True)
    assert graph.group("0").size == 7
    (step,) = pruning_record(model)["steps"]
    assert {s["module"] for s in step["slices"]} == {"0", "2"}


def test_an_invalid_plan_changes_nothing():
    model = _net()
    graph = DependencyGraph.build(model, X)
    with pytest.raises(ValueError, match="out of range"):
        surgery.apply_plan(graph, {"0": [0, 99]}, retrace=True, record=True)
    assert model[0].out_features == 8 and not hasattr(model, "_torchpare_pruning")


# -- one resolver for `ignored` --------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry_point",
    [
        lambda m, ig: DependencyGraph.build(m, X, ignored=ig),
        lambda m, ig: prune(m, X, target_params_ratio=0.5, ignored=ig),
        lambda m, ig: StructurePruner(m, X, ignored=ig),
        lambda m, ig: prune_by_plan(m, X, {}, ignored=ig),
    ],
    ids=["DependencyGraph.build", "prune", "StructurePruner", "prune_by_plan"],
)
def test_the_same_ignored_mistake_raises_the_same_error_everywhere(entry_point):
    model = _net()
    with pytest.raises(IgnoredModuleError, match=r"ignored='4\.weight'.*did you mean '4'") as info:
        entry_point(model, ["4.weight"])
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert not str(info.value).startswith("'")  # not quoted like a plain KeyError
    with pytest.raises(IgnoredModuleError, match="Linear is not a submodule of Sequential"):
        entry_point(_net(), [nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="module names or modules, got 3"):
        entry_point(_net(), [3])


# -- the pruning record: formats -------------------------------------------------------------------
def _saved(tmp_path):
    model = prune_by_plan(_net(), X, {"0": [0, 3], "2": [5]})
    save_pruned(model, tmp_path)
    return model, tmp_path / "pruning.json"


def test_a_format_1_file_still_loads_by_tracing(tmp_path):
    model, cfg = _saved(tmp_path)
    record = json.loads(cfg.read_text())
    record["format_version"] = 1
    record["steps"] = [{"ignored": [], "plan": step["plan"]} for step in record["steps"]]
    cfg.write_text(json.dumps(record))
    loaded = load_pruned(tmp_path, _net())
    torch.testing.assert_close(loaded(X), model(X), atol=0, rtol=0)
    assert pruning_record(loaded)["format_version"] == 2  # recorded anew in the current format


def test_a_format_1_file_whose_group_ids_no_longer_exist_names_the_format(tmp_path):
    _, cfg = _saved(tmp_path)
    record = json.loads(cfg.read_text())
    record["format_version"] = 1
    record["steps"] = [{"ignored": [], "plan": {"0#heads": [0]}}]
    cfg.write_text(json.dumps(record))
    with pytest.raises(PruningFileError, match="format-1 file whose plans name traced group ids"):
        load_pruned(tmp_path, _net())


def test_an_unknown_format_version_is_named(tmp_path):
    _, cfg = _saved(tmp_path)
    record = json.loads(cfg.read_text())
    record["format_version"] = 99
    cfg.write_text(json.dumps(record))
    with pytest.raises(PruningFileError, match="format_version 99.*reads versions \\[1, 2\\]"):
        load_pruned(tmp_path, _net())


def test_a_step_that_does_not_fit_the_model_names_module_and_tensor(tmp_path):
    _, cfg = _saved(tmp_path)
    record = json.loads(cfg.read_text())
    record["steps"][0]["slices"][0]["size"] = 9
    cfg.write_text(json.dumps(record))
    with pytest.raises(PruningFileError, match="step 0 does not fit.*tensor 'weight' of module '0'"):
        load_pruned(tmp_path, _net())


# -- old names -------------------------------------------------------------------------------------
def test_old_import_paths_warn_and_still_work():
    from torchpare.prune.budget import PruneSummary as NewSummary
    from torchpare.prune.budget import prune as new_prune
    from torchpare.prune.counting import module_channels
    from torchpare.prune.rules.hf_config import sync_hf_config

    target = importlib.import_module("torchpare.prune.target")
    for name, new in [("prune", new_prune), ("PruneSummary", NewSummary), ("sync_hf_config", sync_hf_config)]:
        with pytest.warns(FutureWarning, match=f"target.{name} moved"):
            assert getattr(target, name) is new
    pruners = importlib.import_module("torchpare.prune.pruners")
    with pytest.warns(FutureWarning, match="counting.module_channels"):
        assert pruners.module_channels is module_channels
    structure = importlib.import_module("torchpare.prune.pruners.structure")
    with pytest.warns(FutureWarning, match="torchpare.prune.ignored.resolve_ignored"):
        assert structure.resolve_ignored(_net(), ["0"], None, "x") == ["0"]
    sys.modules.pop("torchpare.prune.graph.propagation", None)
    with pytest.warns(FutureWarning, match="prune.labels"):
        from torchpare.prune.graph.propagation import LabelContext
    from torchpare.prune.labels import LabelContext as New

    assert LabelContext is New


def test_label_context_fix_is_renamed_keep_whole():
    from torchpare.prune.labels import LabelContext

    model = nn.Linear(2, 2)
    ctx, other = LabelContext(model), LabelContext(model)
    with pytest.warns(FutureWarning, match="keep_whole"):
        ctx.fix(ctx.param("", "weight", 0, "out"), "model output")
    other.keep_whole(other.param("", "weight", 0, "out"), "model output")
    assert ctx.fixed_reasons == other.fixed_reasons and len(ctx.fixed_reasons) == 2
