"""Parquet tables and local Hugging Face ``datasets`` files (``load_dataset("json"/"csv"/"parquet")``,
``load_from_disk``), read through the path the CLI uses (``DATASETS`` via :func:`torchpare.engine.data.build_data`
and ``torchpare train``), on real data (scikit-learn digits), plus the one-line errors for bad input (the tests of the
missing-package errors are in test_file_datasets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchpare.cli.main import main
from torchpare.engine.config import ConfigError
from torchpare.engine.data import build_data

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def digits_frame() -> object:
    from sklearn.datasets import load_digits

    d = load_digits()
    frame = pd.DataFrame(d.data.astype("float32"), columns=[f"p{i}" for i in range(64)])
    frame["digit"] = d.target.astype("int64")
    return frame


def _train(tmp_path: Path, data: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
output: {out}
model: {{type: DigitsMLP, hidden: 32}}
data: {data}
schedule: {{epochs: 3, lr: 0.01, batch_size: 64}}
""")
    return main(["train", str(cfg), "--quiet"]), out


def _plain_rows(frame: object) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(frame[[f"p{i}" for i in range(64)]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(frame["digit"].to_numpy(), dtype=torch.long)


def test_cli_trains_on_a_parquet_table(tmp_path: Path, digits_frame: object) -> None:
    f = tmp_path / "digits.parquet"
    digits_frame.to_parquet(f)
    bundle = build_data({"type": "table", "path": str(f), "label": "digit", "val_fraction": 0, "test_fraction": 0.2})
    x, y = _plain_rows(digits_frame)
    assert len(bundle.train) + len(bundle.test) == len(x) == 1797
    assert bundle.example.shape == (1, 64)
    together = torch.cat([bundle.train.tensors[0], bundle.test.tensors[0]])
    assert torch.equal(together.sum(0), x.sum(0))  # every row read, values as written
    assert torch.equal(torch.cat([bundle.train.tensors[1], bundle.test.tensors[1]]).bincount(), y.bincount())
    code, out = _train(tmp_path, f"{{type: table, path: {f}, label: digit, val_fraction: 0.1, test_fraction: 0.2}}")
    assert code == 0
    assert json.loads((out / "results.json").read_text())["models"][0]["accuracy"] > 0.85


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_hf_files_load_dataset_reads_the_same_rows_as_the_table_reader(tmp_path: Path, digits_frame: object,
                                                                        fmt: str) -> None:
    pytest.importorskip("datasets")
    small = digits_frame.iloc[:200]
    f = tmp_path / f"digits.{'jsonl' if fmt == 'json' else fmt}"
    {"json": lambda: small.to_json(f, orient="records", lines=True), "csv": lambda: small.to_csv(f, index=False),
     "parquet": lambda: small.to_parquet(f)}[fmt]()
    common = {"path": str(f), "label": "digit", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 3}
    hf = build_data({"type": "hf_files", "format": fmt, **common})
    plain = build_data({"type": "table", **common})  # the same split of the same rows
    for part in ("train", "val", "test"):
        a, b = getattr(hf, part).tensors, getattr(plain, part).tensors
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), part
    assert len(hf.train) == 120


def test_cli_trains_on_a_load_from_disk_folder_and_picks_the_split(tmp_path: Path, digits_frame: object) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_pandas(digits_frame, preserve_index=False)
    ds.save_to_disk(str(tmp_path / "flat"))
    parts = ds.train_test_split(test_size=0.2, seed=0)
    datasets.DatasetDict({"train": parts["train"], "test": parts["test"]}).save_to_disk(str(tmp_path / "dict"))
    code, out = _train(tmp_path, f"{{type: hf_files, path: {tmp_path / 'flat'}, label: digit}}")
    assert code == 0
    assert json.loads((out / "results.json").read_text())["models"][0]["accuracy"] > 0.85
    # a DatasetDict folder gives its split; the test split is another folder split
    bundle = build_data({"type": "hf_files", "path": str(tmp_path / "dict"), "label": "digit", "split": "test",
                         "val_fraction": 0, "test_fraction": 0.5})
    assert len(bundle.train) + len(bundle.test) == len(parts["test"])
    with pytest.raises(ConfigError, match=r"data.split: '.*dict' has no split 'validation' \(splits: train, test\)"):
        build_data({"type": "hf_files", "path": str(tmp_path / "dict"), "label": "digit", "split": "validation"})


@pytest.mark.parametrize("kind", ["parquet_table", "hf_parquet", "hf_json", "hf_disk"])
def test_missing_label_column_names_the_column_and_the_file(tmp_path: Path, digits_frame: object, kind: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    small = digits_frame.iloc[:30]
    if kind in ("parquet_table", "hf_parquet"):
        target = tmp_path / "d.parquet"
        small.to_parquet(target)
    elif kind == "hf_json":
        target = tmp_path / "d.jsonl"
        small.to_json(target, orient="records", lines=True)
    else:
        datasets = pytest.importorskip("datasets")
        target = tmp_path / "disk"
        datasets.Dataset.from_pandas(small, preserve_index=False).save_to_disk(str(target))
    if kind != "parquet_table":
        pytest.importorskip("datasets")
    dtype = "table" if kind == "parquet_table" else "hf_files"
    code, out = _train(tmp_path, f"{{type: {dtype}, path: {target}, label: target}}")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"data.label: column 'target' is not in '{target}'" in err
    assert "columns: p0, p1," in err and "digit" in err and "Traceback" not in err
    assert not (out / "metrics.jsonl").exists()


def test_hf_files_names_text_label_classes_as_the_table_reader_does(tmp_path: Path) -> None:
    """Text labels become class indices; both readers name them on the bundle (hf_files did not)."""
    pytest.importorskip("datasets")
    f = tmp_path / "animals.jsonl"
    rows = [{"x": float(i), "y": float(i % 3), "kind": ["dog", "cat"][i % 2]} for i in range(40)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = {"path": str(f), "label": "kind", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    hf = build_data({"type": "hf_files", **common})
    plain = build_data({"type": "table", **common})
    assert hf.classes == plain.classes == ["cat", "dog"]
    assert torch.equal(hf.train.tensors[1], plain.train.tensors[1])
