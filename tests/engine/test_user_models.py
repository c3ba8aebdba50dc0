"""Models and data from the user's project, through the config and the CLI: a factory model trained on a
CSV table and on an image folder, Hugging Face and sentence-transformers folders, checkpoints, and the
one-line error (exit 2, nothing trained) for each kind of bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.engine.config import ConfigError, validate_config
from torchpare.engine.runner import build_model

USER_MODELS = """
import torch
from torch import nn


def mlp(in_features, classes, hidden=32):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class TinyCNN(nn.Module):
    def __init__(self, channels=3, classes=2):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def broken():
    raise RuntimeError("no GPU here")
"""


@pytest.fixture
def user_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's package ``<name>.models`` on sys.path (a fresh name per test: no module cache between tests)."""
    name = f"w4_user_pkg_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / "src" / name).mkdir(parents=True)
    (tmp_path / "src" / name / "__init__.py").write_text("")
    (tmp_path / "src" / name / "models.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield name
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def _digits_csv(path: Path) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    lines = [",".join(f"p{i}" for i in range(64)) + ",digit"]
    lines += [",".join(str(int(v)) for v in x) + f",{y}" for x, y in zip(d.data, d.target, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path: Path, text: str, command: str = "train") -> int:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return main([command, str(cfg), "--quiet"])


def test_cli_train_user_factory_model_on_digits_csv(tmp_path: Path, user_pkg: str) -> None:
    csv = _digits_csv(tmp_path / "digits.csv")
    out = tmp_path / "run"
    code = _run(tmp_path, f"""
output: {out}
model: {{factory: "{user_pkg}.models:mlp", args: {{in_features: 64, classes: 10}}}}
data: {{type: table, path: {csv}, label: digit, val_fraction: 0.2, test_fraction: 0.2, seed: 0}}
schedule: {{epochs: 4, lr: 0.01, batch_size: 64}}
""")
    assert code == 0
    results = json.loads((out / "results.json").read_text())["models"][0]
    assert results["accuracy"] > 0.85  # real digits, 360 held-out rows
    # the saved weights load back through the same factory section
    again = build_model({"factory": f"{user_pkg}.models:mlp", "args": {"in_features": 64, "classes": 10},
                         "checkpoint": str(out / "model.pt")})
    assert isinstance(again, torch.nn.Sequential)


def test_cli_train_user_model_on_an_image_folder(tmp_path: Path, user_pkg: str) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for cls in (0, 1):
        (tmp_path / "imgs" / f"digit{cls}").mkdir(parents=True)
        for i, img in enumerate(d.images[d.target == cls][:20]):
            Image.fromarray((img * 15).astype("uint8")).save(tmp_path / "imgs" / f"digit{cls}" / f"{i}.png")
    out = tmp_path / "run"
    code = _run(tmp_path, f"""
output: {out}
model: {{factory: "{user_pkg}.models:TinyCNN", args: {{channels: 1, classes: 2}}}}
data:
  type: image_folder
  path: {tmp_path / "imgs"}
  mode: L
  test_fraction: 0.25
  transforms: [{{resize: 10}}, {{crop: 8}}, {{flip: 0.5}}, {{normalize: {{mean: [0.3], std: [0.4]}}}}]
schedule: {{epochs: 2, lr: 0.01, batch_size: 8}}
""")
    assert code == 0
    results = json.loads((out / "results.json").read_text())["models"][0]
    assert 0 <= results["accuracy"] <= 1 and (out / "model.pt").is_file()


@pytest.mark.parametrize(("data", "expected"), [
    ("{type: table, path: MISSING.csv, label: digit}", "data.path: no file or folder at 'MISSING.csv'"),
    ("{type: table, path: BAD_LABEL, label: target}", "data.label: column 'target' is not in"),
    ("{type: image_folder, path: EMPTY_CLASS}", "holds no .png/.jpg/.jpeg image"),
    ("{type: image_folder, path: BROKEN_IMAGE}", "cannot read image '"),
])
def test_cli_bad_data_exits_2_with_one_line_before_training(tmp_path: Path, user_pkg: str, data: str,
                                                            expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    for root in ("empty", "broken"):
        (tmp_path / root / "a").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / root / "a" / "0.png")
        (tmp_path / root / "b").mkdir()
    (tmp_path / "broken" / "b" / "bad.png").write_bytes(b"\x89PNG garbage")
    data = (data.replace("BAD_LABEL", str(tmp_path / "t.csv")).replace("EMPTY_CLASS", str(tmp_path / "empty"))
            .replace("BROKEN_IMAGE", str(tmp_path / "broken")))
    out = tmp_path / "run"
    code = _run(tmp_path, f"""
output: {out}
model: {{factory: "{user_pkg}.models:mlp", args: {{in_features: 2, classes: 2}}}}
data: {data}
schedule: {{epochs: 1}}
""")
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # the error line + the --debug hint
    assert "bad.png" in err or "BROKEN" not in data
    assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()


@pytest.mark.parametrize(("factory", "expected"), [
    ("w4_not_a_package.models:mlp", "model.factory: cannot import module 'w4_not_a_package.models'"),
    ("PKG.models:mpl", "model.factory: module 'PKG.models' has no attribute 'mpl'"),
    ("PKG.models", "model.factory: expected 'package.module:attribute'"),
])
def test_cli_factory_that_cannot_be_imported_names_module_and_attribute(
        tmp_path: Path, user_pkg: str, factory: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(tmp_path, f"""
output: {tmp_path / "run"}
model: {{factory: "{factory.replace("PKG", user_pkg)}", args: {{in_features: 64, classes: 10}}}}
schedule: {{epochs: 1}}
""")
    err = capsys.readouterr().err
    assert code == 2
    assert expected.replace("PKG", user_pkg) in err
    assert not (tmp_path / "run").exists()


def test_factory_section_checks_args_keys_and_call_errors(user_pkg: str) -> None:
    f = f"{user_pkg}.models:mlp"
    with pytest.raises(ConfigError) as exc:
        validate_config({"model": {"factory": f, "args": {"in_features": 2, "clases": 2}, "hidden": 3}}, "train")
    msg = str(exc.value)
    assert "model.args:" in msg and "clases" in msg
    assert "model.hidden: unknown key for a 'factory' model" in msg and "under args" in msg
    with pytest.raises(ConfigError, match="names 2 model sources"):
        validate_config({"model": {"factory": f, "type": "DigitsMLP"}}, "train")
    with pytest.raises(ConfigError, match=r"model.factory: .*broken\(\*\*args\) raised RuntimeError: no GPU here"):
        build_model({"factory": f"{user_pkg}.models:broken"})


def test_factory_model_loads_a_pruned_folder_checkpoint(tmp_path: Path) -> None:
    from torchpare.prune import prune
    from torchpare.prune.io import save_pruned
    from torchpare.zoo import DigitsCNN

    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    pruned, _ = prune(DigitsCNN(width=8), x[:1], importance="l1", target_flops_ratio=0.6)
    save_pruned(pruned, tmp_path / "pruned")
    section = {"factory": "torchpare.zoo:DigitsCNN", "args": {"width": 8}, "checkpoint": str(tmp_path / "pruned")}
    loaded = build_model(section)
    assert torch.allclose(loaded.eval()(x), pruned.eval()(x), atol=1e-5)


def _tiny_bert_folder(folder: Path, task_class: str = "BertForSequenceClassification") -> Path:
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_sources"))
    try:
        from test_file_datasets import tiny_tokenizer_folder
    finally:
        sys.path.pop(0)
    config = transformers.BertConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    getattr(transformers, task_class)(config).save_pretrained(str(folder))
    tiny_tokenizer_folder(folder)
    return folder


def test_hf_folder_by_task_and_sentences_tokenized_with_its_tokenizer(tmp_path: Path) -> None:
    from torchpare.engine.data import build_data
    from torchpare.engine.models import with_tokenizer
    from torchpare.model_io import call_model, logits_of

    folder = _tiny_bert_folder(tmp_path / "bert")
    model = build_model({"hf": str(folder), "task": "sequence-classification"})
    assert type(model).__name__ == "BertForSequenceClassification"
    assert type(build_model({"hf": str(folder)})).__name__ == "BertModel"  # task base: AutoModel
    (tmp_path / "s.txt").write_text("the cat sat\na dog ran\nthe mat\nthe dog sat on a cat\n")
    data_cfg = with_tokenizer({"type": "sentences", "path": str(tmp_path / "s.txt"), "max_length": 8,
                               "test_fraction": 0.25, "val_fraction": 0}, {"hf": str(folder)})
    bundle = build_data(data_cfg)
    assert logits_of(call_model(model, bundle.example)).shape == (1, 3)
    with pytest.raises(ConfigError, match="model.task: unknown task 'sequence-clasification'.*did you mean"):
        validate_config({"model": {"hf": str(folder), "task": "sequence-clasification"}}, "train")
    with pytest.raises(ConfigError, match=r"model.hf: '.*' is not a Hugging Face model folder \(no config.json\)"):
        validate_config({"model": {"hf": str(tmp_path)}}, "train")


def test_cli_tokenizer_missing_from_model_folder_exits_2(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _tiny_bert_folder(tmp_path / "bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    (tmp_path / "s.txt").write_text("the cat\na dog\n")
    code = _run(tmp_path, f"""
output: {tmp_path / "run"}
model: {{hf: {folder}, task: sequence-classification}}
data: {{type: sentences, path: {tmp_path / "s.txt"}}}
schedule: {{epochs: 1}}
""")
    err = capsys.readouterr().err
    assert code == 2
    assert f"data.tokenizer: no tokenizer in the model folder '{folder}'" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_save_pretrained_folder_and_sentence_transformers_folder_load(tmp_path: Path) -> None:
    from torchpare.prune import save_pretrained

    folder = _tiny_bert_folder(tmp_path / "bert")
    model = build_model({"hf": str(folder), "task": "sequence-classification"})
    saved = save_pretrained(model, tmp_path / "saved")
    again = build_model({"hf": str(saved), "task": "sequence-classification"})
    ids = torch.tensor([[2, 5, 6, 3]])
    assert torch.allclose(again.eval()(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)
    st_lib = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    enc = Transformer(str(_tiny_bert_folder(tmp_path / "enc", "BertModel")))
    st = st_lib.SentenceTransformer(modules=[enc, Pooling(16)])
    st.save(str(tmp_path / "st"))
    loaded = build_model({"sentence_transformers": str(tmp_path / "st")})
    assert type(loaded).__name__ == "SentenceTransformer"
    with pytest.raises(ConfigError, match="model.sentence_transformers: .* is not a sentence-transformers folder"):
        validate_config({"model": {"sentence_transformers": str(folder)}}, "train")


@pytest.mark.slow
def test_cli_distill_hf_student_from_hf_teacher_on_a_sentences_file(tmp_path: Path) -> None:
    """End to end: two Hugging Face folders, the teacher's logits distilled into the student on a sentences
    file tokenized with the student folder's tokenizer (and the dict inputs measured for latency)."""
    teacher = _tiny_bert_folder(tmp_path / "teacher")
    student = _tiny_bert_folder(tmp_path / "student")
    (tmp_path / "s.txt").write_text("".join(f"{a} {b} {c}\n" for a in ("the", "a") for b in ("cat", "dog", "mat")
                                            for c in ("sat", "ran", "on")))
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
output: {out}
model: {{hf: {student}, task: sequence-classification}}
teacher: {{hf: {teacher}, task: sequence-classification}}
data: {{type: sentences, path: {tmp_path / "s.txt"}, max_length: 8, test_fraction: 0.2, val_fraction: 0}}
algorithm:
  type: SingleTeacherDistill
  distiller:
    student_recorders: {{logits: {{type: ModuleOutputs, source: classifier}}}}
    teacher_recorders: {{logits: {{type: ModuleOutputs, source: classifier}}}}
    distill_losses: {{kd: {{type: KLDivergence, tau: 2}}}}
    loss_forward_mappings:
      kd:
        preds_S: {{from_student: true, recorder: logits}}
        preds_T: {{from_student: false, recorder: logits}}
schedule: {{epochs: 2, lr: 0.001, batch_size: 4}}
""")
    assert main(["distill", str(cfg), "--quiet"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in str(line) for line in lines)
    assert (out / "model.pt").is_file()
    assert json.loads((out / "results.json").read_text())["models"][0]["latency_ms"] > 0


def test_latency_of_a_dict_input_model_calls_it_with_keywords_like_the_trainer() -> None:
    from torchpare.engine.measure import cpu_latency_ms

    class KeywordModel(torch.nn.Module):  # a Hugging Face-style forward(input_ids, attention_mask)
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return (self.emb(input_ids) * attention_mask[..., None]).sum(1)

    class FeatureDictModel(torch.nn.Module):  # a SentenceTransformer-style forward(features)
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, features: dict) -> torch.Tensor:
            return self.emb(features["input_ids"]).sum(1)

    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3)}
    assert cpu_latency_ms(KeywordModel(), batch, repeats=2, warmup=1) > 0
    assert cpu_latency_ms(FeatureDictModel(), batch, repeats=2, warmup=1) > 0
