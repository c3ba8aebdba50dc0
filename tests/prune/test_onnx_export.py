"""export_onnx: dynamic batch/sequence axes, keyword-input Hugging Face models, outputs equal to PyTorch."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from torchpare.prune import export_onnx, prune
from torchpare.zoo.catalog import build_zoo_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _session(path: Any) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _tokens(batch: int, length: int, vocab: int = 64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 100 + length)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, :2] = 0  # a left-padded row, so the exported mask path is the general one
    return {"input_ids": torch.randint(1, vocab, (batch, length), generator=gen), "attention_mask": mask}


def _quiet_prune(model: torch.nn.Module, inputs: Any, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, _ = prune(model, inputs, **kwargs)
    return model


def test_pruned_cnn_runs_at_another_batch_size(tmp_path: Any) -> None:
    model, x = build_zoo_model("resnet")
    model = _quiet_prune(model, x, target_flops_ratio=0.6)
    session = _session(export_onnx(model, x, tmp_path / "cnn.onnx"))
    for batch in (x.shape[0], x.shape[0] + 3):
        xb = torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(batch))
        (out,) = session.run(None, {"input_0": xb.numpy()})
        with torch.no_grad():
            expected = model(xb)
        assert out.shape[0] == batch
        assert (torch.from_numpy(out) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_pruned_transformer_matches_pytorch_at_two_shapes(family: str, tmp_path: Any) -> None:
    transformers = pytest.importorskip("transformers")
    from torchpare.zoo.hf import hf_llama

    if family == "bert":  # the bare encoder: its forward takes use_cache, which the exporter duplicated
        config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, attn_implementation="eager")
        torch.manual_seed(0)
        model = transformers.BertModel(config).eval()
    else:
        model, _ = hf_llama()
    model = _quiet_prune(model, _tokens(2, 8), target_params_ratio=0.7)
    session = _session(export_onnx(model, _tokens(2, 8), tmp_path / f"{family}.onnx"))
    first = session.get_outputs()[0].name
    assert first == ("last_hidden_state" if family == "bert" else "logits")
    for batch, length in ((2, 8), (3, 13)):
        inputs = _tokens(batch, length)
        (out,) = session.run([first], {k: v.numpy() for k, v in inputs.items()})
        with torch.no_grad():
            expected = model(**inputs)[first]
        assert out.shape[:2] == (batch, length)
        assert (torch.from_numpy(out) - expected).abs().max().item() <= 1e-4


def test_fixed_shapes_on_request_and_name_count_checked(tmp_path: Any) -> None:
    import onnx

    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    path = export_onnx(net, torch.randn(2, 4), tmp_path / "fixed.onnx", dynamic=False)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 4]
    with pytest.raises(ValueError, match="output_names"):
        export_onnx(net, torch.randn(2, 4), tmp_path / "bad.onnx", output_names=["a", "b"])


@pytest.mark.slow
def test_dynamo_exporter_keeps_the_batch_axis_dynamic(tmp_path: Any) -> None:
    model, x = build_zoo_model("resnet")
    model = _quiet_prune(model, x, target_flops_ratio=0.6)
    session = _session(export_onnx(model, x, tmp_path / "cnn.onnx", dynamo=True))
    xb = torch.randn(x.shape[0] + 3, *x.shape[1:])
    (out,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(out) - model(xb)).abs().max().item() <= 1e-4
