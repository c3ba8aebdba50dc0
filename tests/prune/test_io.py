"""save_pruned / load_pruned / export_onnx."""

from __future__ import annotations

import json
import os

import pytest
import torch

from torchpare.prune import RandomPruner, deploy_subnet, export_onnx, load_pruned, prune, save_pruned
from torchpare.prune.io import PruningFileError, input_spec, inputs_from_spec
from torchpare.zoo.catalog import build_zoo_model


def _pruned(name="resnet", steps=1):
    torch.manual_seed(0)
    model, x = build_zoo_model(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = prune(model, x, target_flops_ratio=0.6, iterative_steps=steps)
    return model, x, state


@pytest.mark.parametrize("steps", [1, 2])
def test_save_then_load_rebuilds_the_pruned_model(tmp_path, steps):
    model, x, _ = _pruned(steps=steps)
    save_pruned(model, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["model.safetensors", "pruning.json"]
    record = json.loads((tmp_path / "ckpt" / "pruning.json").read_text())
    assert len(record["steps"]) == steps and record["fingerprint"]
    fresh, _ = build_zoo_model("resnet")
    loaded = load_pruned(tmp_path / "ckpt", fresh.eval())
    torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in model.parameters()]


def test_deployed_subnet_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model, x = build_zoo_model("mobilenetv2")
    pruner = RandomPruner(model, x)
    pruner.set_subnet(pruner.sample_subnet(torch.Generator().manual_seed(0)))
    masked = model(x)
    fresh, _ = build_zoo_model("mobilenetv2")
    fresh.load_state_dict(model.state_dict())
    deployed = deploy_subnet(fresh.eval(), pruner.export_subnet())
    save_pruned(deployed, tmp_path)
    again, _ = build_zoo_model("mobilenetv2")
    torch.testing.assert_close(load_pruned(tmp_path, again.eval())(x), masked, atol=1e-5, rtol=0)


def test_loading_into_another_architecture_names_the_parameter(tmp_path):
    model, _, _ = _pruned()
    save_pruned(model, tmp_path)
    other, _ = build_zoo_model("vgg")
    with pytest.raises(PruningFileError, match="another architecture.*parameter '"):
        load_pruned(tmp_path, other)


def test_loading_into_an_already_pruned_model_is_refused(tmp_path):
    model, _, _ = _pruned()
    save_pruned(model, tmp_path)
    with pytest.raises(PruningFileError, match="unpruned"):
        load_pruned(tmp_path, model)


def test_missing_or_corrupt_files_raise_clear_errors(tmp_path):
    fresh, _ = build_zoo_model("resnet")
    with pytest.raises(PruningFileError, match="pruning.json.*not found"):
        load_pruned(tmp_path / "nowhere", fresh)
    model, _, _ = _pruned()
    save_pruned(model, tmp_path)
    (tmp_path / "pruning.json").write_text("{not json")
    with pytest.raises(PruningFileError, match="not a torchpare pruning config"):
        load_pruned(tmp_path, fresh)


def test_save_leaves_no_temporary_files_and_overwrites_atomically(tmp_path):
    model, _, _ = _pruned()
    save_pruned(model, tmp_path)
    save_pruned(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "pruning.json"]


def test_input_spec_round_trip_keeps_shapes_dtypes_and_valid_masks():
    inputs = {
        "input_ids": torch.randint(1, 9, (2, 5)),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "pixel_values": torch.randn(1, 3, 4, 4),
    }
    spec = json.loads(json.dumps(input_spec(inputs)))
    rebuilt = inputs_from_spec(spec)
    assert {k: (v.shape, v.dtype) for k, v in rebuilt.items()} == {
        k: (v.shape, v.dtype) for k, v in inputs.items()
    }
    assert bool((rebuilt["attention_mask"] == 1).all()) and bool((rebuilt["input_ids"] == 0).all())


def test_export_onnx_runs_in_onnxruntime_with_equal_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, x, _ = _pruned()
    path = export_onnx(model, x, tmp_path / "pruned.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_0": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), atol=1e-4, rtol=1e-4)


def test_export_onnx_of_a_head_pruned_bert_takes_keyword_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("transformers")
    from torchpare.zoo.hf import hf_bert

    torch.manual_seed(0)
    model, inputs = hf_bert()
    model, _ = prune(model, inputs, target_params_ratio=0.9, units=("head",), global_pruning=False)
    path = export_onnx(model, inputs, tmp_path / "bert.onnx", output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    (logits,) = session.run(["logits"], feed)
    torch.testing.assert_close(
        torch.from_numpy(logits), model(**inputs).logits.detach(), atol=1e-4, rtol=1e-4
    )


def test_unrecorded_pruning_after_save_record_is_detected_on_load(tmp_path):
    from torchpare.prune.graph import DependencyGraph

    model, x, _ = _pruned()
    graph = DependencyGraph.build(model, x)
    group = graph.groups()[0]
    graph.prune({group.id: [0]})  # bypasses torchpare's record
    save_pruned(model, tmp_path)
    fresh, _ = build_zoo_model("resnet")
    with pytest.raises(PruningFileError, match="changed after torchpare pruned it"):
        load_pruned(tmp_path, fresh)


@pytest.mark.slow
def test_export_onnx_with_the_dynamo_exporter_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, x, _ = _pruned()
    path = export_onnx(model, x, tmp_path / "dynamo.onnx", dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), atol=1e-4, rtol=1e-4)
