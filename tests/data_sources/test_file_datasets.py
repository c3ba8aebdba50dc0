"""Datasets from local files (torchpare.datasets.files): what a user's CSV, JSONL, image folder or sentence
file becomes, and the one-line error naming the key and the file for each kind of bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from torchpare.datasets import DataBundle, DataFileError, FactoryImportError
from torchpare.datasets.files import data_factory, image_folder, sentences, table
from torchpare.registry import DATASETS


def _csv(path: Path, rows: list[list], header: str = "a,b,y") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _png(path: Path, value: int, size: tuple[int, int] = (6, 5)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 0)).save(path)
    return path


def _image_tree(root: Path, per_class: int = 5) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 40 * c + i)
    return root


def test_registered_names_build_the_fillers() -> None:
    for name in ("image_folder", "table", "csv", "jsonl", "parquet", "sentences", "text", "hf_files", "factory"):
        assert name in DATASETS, name


def test_csv_table_text_labels_become_sorted_classes_and_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", [[i, i * 0.5, ("spam", "ham")[i % 2]] for i in range(40)])
    a = table(str(f), label="y", val_fraction=0.25, test_fraction=0.25, seed=3)
    b = table(str(f), label="y", val_fraction=0.25, test_fraction=0.25, seed=3)
    assert a.classes == ["ham", "spam"]
    assert (len(a.train), len(a.val), len(a.test)) == (20, 10, 10)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])  # same seed, same split
    assert torch.bincount(a.val.tensors[1]).tolist() == [5, 5]  # stratified
    x, y = a.train[0]
    assert x.dtype == torch.float32 and x.shape == (2,) and y.dtype == torch.long
    assert tuple(a.example.shape) == (1, 2)
    # row i = (i, i/2, label i%2): features and labels stay paired
    xs, ys = a.train.tensors
    assert torch.equal(ys, torch.tensor([0 if int(v) % 2 else 1 for v in xs[:, 0]]))


def test_jsonl_table_with_its_own_val_and_test_files_and_feature_columns(tmp_path: Path) -> None:
    def write(name: str, n: int) -> str:
        p = tmp_path / name
        p.write_text("".join(json.dumps({"x1": i, "x2": -i, "noise": 7, "label": i % 3}) + "\n" for i in range(n)))
        return str(p)

    bundle = table(write("train.jsonl", 12), features=["x2", "x1"], val_path=write("val.jsonl", 6),
                   test_path=write("test.jsonl", 3))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 6, 3)
    assert bundle.train.tensors[0][5].tolist() == [-5.0, 5.0]
    assert bundle.train.tensors[1].tolist() == [i % 3 for i in range(12)]


def test_table_label_column_that_does_not_exist_names_the_column_the_file_and_the_columns(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(DataFileError, match=r"data.label: column 'target' is not in '.*t.csv'.*columns: a, b, y"):
        table(str(f), label="target")


def test_table_missing_file_and_non_number_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"data.path: no file at '.*nope.csv'"):
        table(str(tmp_path / "nope.csv"), label="y")
    f = _csv(tmp_path / "t.csv", [[1, 2, 0], [3, "x", 1]])
    with pytest.raises(DataFileError, match=r"row 2 column 'b' is 'x', not a number") as exc:
        table(str(f), label="y", val_fraction=0, test_fraction=0.5)
    assert "\n" not in str(exc.value)


def test_parquet_without_pandas_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed: `import pandas` raises ImportError
    f = tmp_path / "t.parquet"
    f.write_bytes(b"PAR1")
    with pytest.raises(DataFileError, match="needs pandas and pyarrow: pip install pandas pyarrow"):
        table(str(f), label="y")


def test_hf_files_without_datasets_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    f = _csv(tmp_path / "t.csv", [[1, 2, 0]])
    with pytest.raises(DataFileError, match="pip install datasets"):
        DATASETS.build({"type": "hf_files", "path": str(f)})


def test_image_folder_reads_classes_and_applies_transforms_in_order(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs")
    bundle = image_folder(str(root), val_fraction=0.2, test_fraction=0.2, transforms=[
        {"resize": [8, 10]}, {"crop": 4}, {"flip": 1.0}, {"normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
    ])
    assert bundle.classes == ["cat", "dog"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (6, 2, 2)
    x, y = bundle.train[0]
    assert x.shape == (3, 4, 4) and int(y) in (0, 1)
    # a solid (v, 255 - v, 0) image: normalized channels are 2 * v / 255 - 1, ...
    blue = x[2]
    assert torch.allclose(blue, torch.full_like(blue, -1.0))
    assert bundle.val.tensors[0].shape == (2, 3, 4, 4)
    grey = image_folder(str(root), val_fraction=0, test_fraction=0.2, mode="L")
    assert grey.train[0][0].shape == (1, 5, 6)


def test_image_folder_flip_is_horizontal_and_only_on_training_images(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "r" / c).mkdir(parents=True)
        for i in range(3):
            im = Image.new("L", (3, 2), 0)
            im.putpixel((0, 0), 255)
            im.save(tmp_path / "r" / c / f"{i}.png")
    bundle = image_folder(str(tmp_path / "r"), val_fraction=0, test_fraction=0.34, mode="L",
                          transforms=[{"flip": 1.0}])
    assert bundle.train[0][0][0, 0].tolist() == [0.0, 0.0, 1.0]
    assert bundle.test[0][0][0, 0].tolist() == [1.0, 0.0, 0.0]


def test_image_folder_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs")
    (root / "zebra").mkdir()
    with pytest.raises(DataFileError, match=r"data.path: class folder '.*zebra' holds no .png/.jpg/.jpeg image"):
        image_folder(str(root))


def test_image_folder_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataFileError, match=r"cannot read image '.*broken.jpg'"):
        image_folder(str(root))


def test_image_folder_missing_folder_sizes_and_unknown_transform(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"data.path: no folder at '.*nothere'"):
        image_folder(str(tmp_path / "nothere"))
    root = _image_tree(tmp_path / "imgs")
    _png(root / "cat" / "big.png", 3, size=(9, 9))
    with pytest.raises(DataFileError, match="add a resize transform"):
        image_folder(str(root))
    with pytest.raises(DataFileError, match=r"data.transforms\[0\]: unknown transform 'rotate'"):
        image_folder(str(root), transforms=[{"rotate": 90}])
    with pytest.raises(DataFileError, match=r"data.val_path: no folder"):
        image_folder(str(root), val_path=str(tmp_path / "val"), transforms=[{"resize": 4}])


def tiny_tokenizer_folder(folder: Path) -> Path:
    """A BERT word-piece tokenizer saved in ``folder`` (written here, nothing downloaded)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    return folder


def test_sentences_are_tokenized_with_the_folder_tokenizer_and_unlabelled(tmp_path: Path) -> None:
    tok = tiny_tokenizer_folder(tmp_path / "model")
    txt = tmp_path / "s.txt"
    txt.write_text("the cat sat on the mat\n\na dog ran\nthe dog sat\nthe cat ran\n")
    bundle = sentences(str(txt), tokenizer=str(tok), max_length=6, val_fraction=0.25, test_fraction=0.25)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (2, 1, 1)
    item = bundle.train[0]
    assert int(item["targets"]) == -100
    assert item["inputs"]["input_ids"].shape == (6,)
    assert set(bundle.example) >= {"input_ids", "attention_mask"} and bundle.example["input_ids"].shape == (1, 6)
    longest = sentences(str(txt), tokenizer=str(tok), max_length=64, padding="longest", val_fraction=0,
                        test_fraction=0.25)
    assert longest.train[0]["inputs"]["input_ids"].shape == (8,)  # [CLS] + 6 words + [SEP]
    jl = tmp_path / "s.jsonl"
    jl.write_text("".join(json.dumps({"sentence": s}) + "\n" for s in ("the cat", "a dog", "the mat", "a cat")))
    assert len(sentences(str(jl), tokenizer=str(tok), text_field="sentence", test_fraction=0.25,
                         val_fraction=0).train) == 3
    with pytest.raises(DataFileError, match=r"data.text_field: field 'text' is not in '.*s.jsonl'"):
        sentences(str(jl), tokenizer=str(tok))


def test_sentences_tokenizer_missing_from_model_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    txt = tmp_path / "s.txt"
    txt.write_text("a\nb\n")
    with pytest.raises(DataFileError, match=r"data.tokenizer: no tokenizer in the model folder '.*model'"):
        sentences(str(txt), tokenizer=str(tmp_path / "model"))


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_data_factory_calls_the_named_function_with_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, monkeypatch, "w4_user_data", """
import torch
from torch.utils.data import TensorDataset
from torchpare.datasets import DataBundle

def build(n=4):
    ds = TensorDataset(torch.randn(n, 3), torch.zeros(n, dtype=torch.long))
    return DataBundle(train=ds, val=None, test=ds, example=ds.tensors[0][:1])

def not_a_bundle():
    return [1, 2]
""")
    assert len(data_factory("w4_user_data:build", {"n": 7}).train) == 7
    with pytest.raises(DataFileError, match=r"data.factory: w4_user_data:not_a_bundle\(\) returned a list"):
        data_factory("w4_user_data:not_a_bundle")
    with pytest.raises(FactoryImportError, match="data.factory: module 'w4_user_data' has no attribute 'nope'"):
        data_factory("w4_user_data:nope")
    with pytest.raises(FactoryImportError, match="data.factory: cannot import module 'w4_no_such_pkg.data'"):
        data_factory("w4_no_such_pkg.data:build")
    with pytest.raises(FactoryImportError, match="expected 'package.module:attribute'"):
        data_factory("w4_user_data.build")
    assert isinstance(DATASETS.build({"type": "factory", "factory": "w4_user_data:build"}), DataBundle)


def test_label_fraction_masks_training_labels_per_class_like_digits(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", [[i, i, i % 2] for i in range(40)])
    bundle = table(str(f), label="y", val_fraction=0, test_fraction=0.5, label_fraction=0.25)
    y = bundle.train.tensors[1]
    assert int((y >= 0).sum()) == 4 and int((y == -100).sum()) == 16
    assert (bundle.test.tensors[1] >= 0).all()  # held-out labels stay
    with pytest.raises(DataFileError, match="data.label_fraction: must be in"):
        table(str(f), label="y", label_fraction=0)
