"""Datasets from the user's local files: image folders, tables, sentence files, Hugging Face ``datasets``
files and Python factories. Each filler returns a :class:`~torchpare.datasets.bundle.DataBundle` and is
registered in :data:`torchpare.registry.DATASETS`, so a config's ``data`` section names it by ``type``.

=================  ===========================================================================
``type``           reads
=================  ===========================================================================
``image_folder``   ``path/<class>/*.png|jpg|jpeg`` (Pillow); ``transforms``: resize, crop, flip, normalize
``table``          a ``.csv``, ``.jsonl`` or ``.parquet`` file: ``features`` columns + a ``label`` column
``sentences``      a ``.txt`` (one sentence a line) or ``.jsonl`` (``text_field``) file, unlabelled,
                   tokenized with the model folder's tokenizer (``max_length``, ``padding``)
``hf_files``       local Hugging Face ``datasets`` files (``load_dataset("csv"/"json"/"parquet")``) or a
                   ``save_to_disk`` folder (``load_from_disk``); needs the ``datasets`` package
``factory``        ``"my_pkg.data:build"`` + ``args``: your own function returning a ``DataBundle``
=================  ===========================================================================

Validation and test sets: ``val_path`` / ``test_path`` name their own files (or folders); without them a
seeded ``val_fraction`` / ``test_fraction`` of ``path`` is held out (per class where there are labels).
Without a test set (``test_fraction: 0`` and no ``test_path``) the validation set is also the test set.
Everything is read once, when the config is built, so a missing file, an empty class folder, an
unreadable image or a missing column is reported (one line naming the key and the file) before any
training starts.

Example:
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = f.write_text("a,b,y\\n" + "".join(f"{i},{-i},{i % 2}\\n" for i in range(20)))
    >>> bundle = table(str(f), label="y", val_fraction=0.2, test_fraction=0.2)
    >>> len(bundle.train), len(bundle.val), len(bundle.test), tuple(bundle.example.shape)
    (12, 4, 4, (1, 2))
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from torchpare.datasets.bundle import UNLABELLED, DataBundle, mask_labels
from torchpare.datasets.factory import DataFileError, import_factory
from torchpare.registry import DATASETS

__all__ = ["image_folder", "table", "sentences", "hf_files", "data_factory", "load_tokenizer", "IMAGE_SUFFIXES", "TRANSFORMS",
           "TOKENIZER_FILES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRANSFORMS = ("resize", "crop", "flip", "normalize")
# A model folder holds a tokenizer when it has one of these files (AutoTokenizer reads them).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json",
                   "sentencepiece.bpe.model", "tokenizer.model")
_PADDING = ("max_length", "longest", "batch")


# ----------------------------------------------------------------------------------------------- splits
def _need(path: Any, key: str, folder: bool = False) -> Path:
    if not isinstance(path, str | Path) or not str(path):
        raise DataFileError(f"{key}: expected a {'folder' if folder else 'file'} path, got {path!r}")
    p = Path(path)
    if folder and not p.is_dir():
        raise DataFileError(f"{key}: no folder at '{p}'" + (" (it is a file)" if p.is_file() else ""))
    if not folder and not p.is_file():
        raise DataFileError(f"{key}: no file at '{p}'" + (" (it is a folder)" if p.is_dir() else ""))
    return p


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(f, int | float) or not 0 <= f < 1:
            raise DataFileError(f"data.{key}: must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise DataFileError(f"data.val_fraction + data.test_fraction: must be < 1, got {val_fraction + test_fraction}")


def _split_indices(labels: Sequence[int] | None, n: int, val_fraction: float, test_fraction: float,
                   seed: int) -> tuple[list[int], list[int], list[int]]:
    """Seeded train/val/test indices; stratified by label when there are labels."""
    gen = torch.Generator().manual_seed(seed)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(labels[i] if labels is not None else 0, []).append(i)
    parts: list[list[int]] = [[], [], []]
    for key in sorted(groups):
        idx = groups[key]
        perm = [idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()]
        n_val, n_test = round(val_fraction * len(perm)), round(test_fraction * len(perm))
        parts[1] += perm[:n_val]
        parts[2] += perm[n_val:n_val + n_test]
        parts[0] += perm[n_val + n_test:]
    return sorted(parts[0]), sorted(parts[1]), sorted(parts[2])


def _take(ds: Dataset, idx: list[int]) -> Dataset:
    if isinstance(ds, _Encoded):
        return ds.take(idx)
    if isinstance(ds, TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return TensorDataset(*(x[t] for x in ds.tensors))
    return torch.utils.data.Subset(ds, idx)


def _bundle(load: Any, path: Any, val_path: Any, test_path: Any, val_fraction: float, test_fraction: float,
            seed: int, labels_of: Any = None, label_fraction: float = 1.0) -> DataBundle:
    """``load(path, key) -> dataset``; held-out parts come from their files or a seeded fraction; training
    labels are kept for ``label_fraction`` of each class (the others become -100, unlabelled)."""
    _check_fractions(val_fraction, test_fraction)
    if not isinstance(label_fraction, int | float) or not 0 < label_fraction <= 1:
        raise DataFileError(f"data.label_fraction: must be in (0, 1], got {label_fraction!r}")
    train = load(path, "data.path")
    val = load(val_path, "data.val_path") if val_path is not None else None
    test = load(test_path, "data.test_path") if test_path is not None else None
    vf = 0.0 if val is not None else val_fraction
    tf = 0.0 if test is not None else test_fraction
    if vf or tf:
        labels = labels_of(train) if labels_of is not None else None
        tr, va, te = _split_indices(labels, len(train), vf, tf, seed)
        if not tr:
            raise DataFileError(f"data.path: '{path}' has too few samples ({len(train)}) to hold out "
                                f"val_fraction={vf} and test_fraction={tf}")
        val = _take(train, va) if val is None and va else val
        test = _take(train, te) if test is None and te else test
        train = _take(train, tr)
    if len(train) == 0:
        raise DataFileError(f"data.path: '{path}' holds no samples")
    if test is None:
        if val is None:
            raise DataFileError("data.test_fraction: no test set; give data.test_path or a test/val fraction > 0")
        test = val
    if label_fraction < 1 and isinstance(train, TensorDataset):
        x, y = train.tensors[:2]
        train = TensorDataset(x, mask_labels(y, label_fraction, seed))
    return train, val, test


def _first_inputs(ds: Dataset, n: int = 1) -> Any:
    from torch.utils.data import default_collate

    return default_collate([ds[i][0] if not isinstance(ds[i], Mapping) else ds[i]["inputs"]
                            for i in range(min(n, len(ds)))])


def _make_bundle(train: Dataset, val: Dataset | None, test: Dataset) -> DataBundle:
    # the latency batch: as the trainer batches it (sentences padded per batch keep that padding)
    batch = (test.fetch_batch(range(min(64, len(test))))["inputs"] if isinstance(test, _Encoded)
             else _first_inputs(test, 64))
    return DataBundle(train=train, val=val, test=test, example=_first_inputs(train), batch=batch)


# ----------------------------------------------------------------------------------------------- images
def _transform_list(transforms: Any) -> list[tuple[str, Any]]:
    """``[{resize: [32, 32]}, {crop: 28}, {flip: 0.5}, {normalize: {mean: [...], std: [...]}}]``."""
    out: list[tuple[str, Any]] = []
    for i, item in enumerate(transforms or []):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise DataFileError(f"data.transforms[{i}]: expected a one-key mapping such as {{resize: 32}}, "
                                f"got {item!r}; transforms: {', '.join(TRANSFORMS)}")
        (name, arg), = item.items()
        if name not in TRANSFORMS:
            raise DataFileError(f"data.transforms[{i}]: unknown transform {name!r}; transforms: {', '.join(TRANSFORMS)}")
        if name in ("resize", "crop"):
            size = [arg, arg] if isinstance(arg, int) else arg
            if not (isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
                raise DataFileError(f"data.transforms[{i}].{name}: expected a size (int or [height, width]), got {arg!r}")
            arg = (int(size[0]), int(size[1]))
        elif name == "flip":
            if not isinstance(arg, int | float) or not 0 <= arg <= 1:
                raise DataFileError(f"data.transforms[{i}].flip: expected a probability in [0, 1], got {arg!r}")
        elif name == "normalize" and not (isinstance(arg, Mapping) and set(arg) == {"mean", "std"}):
            raise DataFileError(f"data.transforms[{i}].normalize: expected {{mean: [...], std: [...]}}, got {arg!r}")
        out.append((name, arg))
    return out


def _read_image(file: Path, mode: str, steps: list[tuple[str, Any]]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im = im.convert(mode)
            for name, arg in steps:
                if name == "resize":
                    im = im.resize((arg[1], arg[0]), Image.Resampling.BILINEAR)
                elif name == "crop":
                    w, h = im.size
                    if arg[0] > h or arg[1] > w:
                        raise DataFileError(f"data.transforms.crop: {list(arg)} is larger than '{file}' ({h}x{w}); "
                                            f"resize first")
                    top, left = (h - arg[0]) // 2, (w - arg[1]) // 2
                    im = im.crop((left, top, left + arg[1], top + arg[0]))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            x = data.view(im.size[1], im.size[0], len(im.getbands())).permute(2, 0, 1).float() / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"data.path: cannot read image '{file}' ({type(exc).__name__}: {exc})") from None
    for name, arg in steps:
        if name == "normalize":
            mean = torch.tensor(arg["mean"], dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(arg["std"], dtype=torch.float32).view(-1, 1, 1)
            if mean.shape[0] not in (1, x.shape[0]) or std.shape[0] not in (1, x.shape[0]):
                raise DataFileError(f"data.transforms.normalize: mean/std need 1 or {x.shape[0]} values "
                                    f"(mode {mode})")
            x = (x - mean) / std
    return x


class _Flipped(Dataset):
    """Random horizontal flip (probability ``p``) of the images of ``(x, y)`` items, drawn from torch's RNG."""

    def __init__(self, base: TensorDataset, p: float) -> None:
        self.base, self.p = base, p

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        x, *rest = self.base[i]
        if self.p > 0 and float(torch.rand(())) < self.p:
            x = x.flip(-1)
        return (x, *rest)


@DATASETS.register(aliases=("images", "ImageFolder"))
def image_folder(
    path: str,
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    label_fraction: float = 1.0,
    transforms: Sequence[Mapping[str, Any]] | None = None,
    mode: str = "RGB",
) -> DataBundle:
    """An image-classification folder: ``path/<class name>/*.png|*.jpg|*.jpeg``, classes sorted by name.

    Images are read once with Pillow, converted to ``mode`` (``RGB`` or ``L``), passed through
    ``transforms`` in order and kept as float tensors in ``[0, 1]`` (before ``normalize``). Transforms:
    ``{resize: [h, w] | size}``, ``{crop: [h, w] | size}`` (centre crop), ``{flip: p}`` (random
    horizontal flip of training images only) and ``{normalize: {mean: [...], std: [...]}}``.

    Args:
        path: The training folder.
        val_path, test_path: Folders of the same layout (class names must be among ``path``'s).
        val_fraction, test_fraction: Held out of ``path`` per class (seeded) when no folder is given.
        seed: Seed of the split (and of the label mask).
        label_fraction: Fraction of training labels kept per class; the others become -100 (unlabelled).
        transforms: A list of one-key mappings, see above.
        mode: Pillow image mode: ``RGB`` (3 channels) or ``L`` (1 channel).

    Returns:
        A :class:`DataBundle` of ``(image, class index)``; ``classes`` lists the class names.

    Raises:
        DataFileError: a missing folder, a folder without class sub-folders, an empty class folder, an
            unreadable image (named), images of different sizes without ``resize``, an unknown transform.
    """
    try:
        import PIL  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataFileError("data: the image_folder dataset needs Pillow: pip install 'torchpare[data]'") from None
    if mode not in ("RGB", "L"):
        raise DataFileError(f"data.mode: must be 'RGB' or 'L', got {mode!r}")
    steps = _transform_list(transforms)
    flip = sum(float(a) for n, a in steps if n == "flip")
    fixed = [(n, a) for n, a in steps if n != "flip"]
    root = _need(path, "data.path", folder=True)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFileError(f"data.path: '{root}' has no class sub-folders (expected {root}/<class>/<image>.png)")

    def load(folder: Any, key: str) -> TensorDataset:
        folder = _need(folder, key, folder=True)
        xs: list[torch.Tensor] = []
        ys: list[int] = []
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subs:
            raise DataFileError(f"{key}: '{folder}' has no class sub-folders (expected {folder}/<class>/<image>.png)")
        for sub in subs:
            if sub.name not in classes:
                raise DataFileError(f"{key}: class folder '{sub}' is not a class of data.path ({', '.join(classes)})")
            files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataFileError(f"{key}: class folder '{sub}' holds no {'/'.join(IMAGE_SUFFIXES)} image")
            for f in files:
                x = _read_image(f, mode, fixed)
                if xs and x.shape != xs[0].shape:
                    raise DataFileError(f"{key}: image '{f}' is {tuple(x.shape[1:])} but earlier images are "
                                        f"{tuple(xs[0].shape[1:])}; add a resize transform")
                xs.append(x)
                ys.append(classes.index(sub.name))
        return TensorDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.long))

    train, val, test = _bundle(load, path, val_path, test_path, val_fraction, test_fraction, seed,
                               labels_of=lambda ds: ds.tensors[1].tolist(), label_fraction=label_fraction)
    if flip > 0:
        train = _Flipped(train, min(flip, 1.0))
    bundle = _make_bundle(train, val, test)
    bundle.classes = classes  # type: ignore[attr-defined]
    return bundle


# ----------------------------------------------------------------------------------------------- tables
def _read_rows(file: Path, key: str) -> list[dict[str, Any]]:
    suffix = file.suffix.lower()
    if suffix == ".csv":
        with file.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    if suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{key}: '{file}' line {n} is not JSON ({exc.msg}); expected one object a line") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{key}: '{file}' line {n} is a {type(row).__name__}, not a JSON object")
            rows.append(row)
        return rows
    if suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError:
            raise DataFileError(f"{key}: reading '{file}' (Parquet) needs pandas and pyarrow: "
                                f"pip install pandas pyarrow") from None
        try:
            return pd.read_parquet(file).to_dict("records")
        except ImportError as exc:
            raise DataFileError(f"{key}: reading '{file}' (Parquet) needs pyarrow: pip install pyarrow ({exc})") from None
    raise DataFileError(f"{key}: '{file}' is not a .csv, .jsonl or .parquet file")


def _rows_to_tensors(rows: list[dict[str, Any]], label: str, features: Sequence[str] | None, where: str,
                     key: str, classes: dict[Any, int] | None) -> tuple[TensorDataset, dict[Any, int]]:
    if not rows:
        raise DataFileError(f"{key}: {where} holds no rows")
    columns = list(rows[0])
    if label not in columns:
        raise DataFileError(f"data.label: column '{label}' is not in {where} (columns: {', '.join(map(str, columns))})")
    feats = list(features) if features is not None else [c for c in columns if c != label]
    for c in feats:
        if c not in columns:
            raise DataFileError(f"data.features: column '{c}' is not in {where} (columns: {', '.join(map(str, columns))})")
    if not feats:
        raise DataFileError(f"data.features: {where} has no feature column besides the label '{label}'")
    xs = []
    for n, row in enumerate(rows):
        try:
            xs.append([float(row[c]) for c in feats])
        except (TypeError, ValueError, KeyError):
            bad = next(c for c in feats if not _is_number(row.get(c)))
            raise DataFileError(f"data.features: {where} row {n + 1} column '{bad}' is {row.get(bad)!r}, not a number") from None
    raw = [row.get(label) for row in rows]
    if classes is None:
        if all(_is_int(v) for v in raw):
            classes = {}
        else:
            classes = {v: i for i, v in enumerate(sorted({str(v) for v in raw}))}
    if classes:
        missing = sorted({str(v) for v in raw} - set(classes))
        if missing:
            raise DataFileError(f"data.label: {where} has labels not in data.path: {', '.join(missing[:5])}")
        ys = [classes[str(v)] for v in raw]
    else:
        if not all(_is_int(v) for v in raw):
            raise DataFileError(f"data.label: {where} mixes integer and text labels in column '{label}'")
        ys = [int(float(v)) for v in raw]
    return TensorDataset(torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.long)), classes


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(v: Any) -> bool:
    return _is_number(v) and not isinstance(v, bool) and float(v) == math.floor(float(v))


@DATASETS.register(aliases=("csv", "jsonl", "parquet", "tabular"))
def table(
    path: str,
    label: str = "label",
    features: Sequence[str] | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    label_fraction: float = 1.0,
) -> DataBundle:
    """A table of numeric feature columns and a label column: ``.csv``, ``.jsonl`` (one object a line) or
    ``.parquet`` (needs pandas + pyarrow).

    Labels that are all integers are class indices as they are; otherwise the sorted distinct label
    texts of ``path`` become classes 0, 1, ... (``classes`` on the bundle).

    Args:
        path: The training table.
        label: The label column.
        features: The feature columns, in order; default: every column but ``label``.
        val_path, test_path: Tables with the same columns.
        val_fraction, test_fraction: Held out of ``path`` per class (seeded) when no file is given.
        seed: Seed of the split (and of the label mask).
        label_fraction: Fraction of training labels kept per class; the others become -100 (unlabelled).

    Returns:
        A :class:`DataBundle` of ``(float32 features, class index)``.

    Raises:
        DataFileError: a missing file, an unknown suffix, a label or feature column that does not exist
            (the columns are listed), a value that is not a number, Parquet without pandas/pyarrow.
    """
    def read(file: Any, key: str) -> tuple[list[dict[str, Any]], Path]:
        f = _need(file, key)
        return _read_rows(f, key), f

    return _table_bundle(read, path, label, features, val_path, test_path, val_fraction, test_fraction, seed,
                         label_fraction)


def _table_bundle(read: Any, path: str, label: str, features: Sequence[str] | None, val_path: str | None,
                  test_path: str | None, val_fraction: float, test_fraction: float, seed: int,
                  label_fraction: float) -> DataBundle:
    """The bundle of :func:`table` and :func:`hf_files`: ``read(file, key) -> (rows, shown path)`` per file,
    one class numbering over all of them (the training file's first), ``classes`` named on the bundle."""
    state: dict[str, Any] = {"classes": None}

    def load(file: Any, key: str) -> TensorDataset:
        rows, shown = read(file, key)
        ds, state["classes"] = _rows_to_tensors(rows, label, features, f"'{shown}' ({key})", key, state["classes"])
        return ds

    train, val, test = _bundle(load, path, val_path, test_path, val_fraction, test_fraction, seed,
                               labels_of=lambda ds: ds.tensors[1].tolist(), label_fraction=label_fraction)
    bundle = _make_bundle(train, val, test)
    bundle.classes = sorted(state["classes"], key=state["classes"].get) if state["classes"] else None  # type: ignore[attr-defined]
    return bundle


# -------------------------------------------------------------------------------------------- sentences
def load_tokenizer(folder: Any, key: str = "data.tokenizer") -> Any:
    """The tokenizer saved in a local model folder (``AutoTokenizer``, offline).

    Raises:
        DataFileError: no folder, or no tokenizer file in it (:data:`TOKENIZER_FILES`).
    """
    f = _need(folder, key, folder=True)
    if not any((f / name).is_file() for name in TOKENIZER_FILES):
        raise DataFileError(f"{key}: no tokenizer in the model folder '{f}' (none of {', '.join(TOKENIZER_FILES)}); "
                            f"save it there with tokenizer.save_pretrained('{f}')")
    try:
        from transformers import AutoTokenizer
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataFileError(f"{key}: tokenizing needs transformers: pip install 'torchpare[hf]'") from None
    try:
        return AutoTokenizer.from_pretrained(str(f), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{key}: cannot load the tokenizer of '{f}' ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


class _Encoded(Dataset):
    """Tokenized sentences as ``{"inputs": {input_ids, attention_mask, ...}, "targets": -100}`` items.

    With ``trim`` (``"right"`` or ``"left"``, the tokenizer's padding side) :meth:`fetch_batch` cuts a
    batch to its longest sentence (``padding: batch``); single items keep the stored length.
    """

    def __init__(self, encoded: Mapping[str, torch.Tensor], trim: str | None = None) -> None:
        self.encoded = dict(encoded)
        self.trim = trim if "attention_mask" in self.encoded else None

    def __len__(self) -> int:
        return len(next(iter(self.encoded.values())))

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"inputs": {k: v[i] for k, v in self.encoded.items()},
                "targets": torch.tensor(UNLABELLED, dtype=torch.long)}

    def take(self, indices: Sequence[int]) -> _Encoded:
        """The items at ``indices``, as a dataset of the same kind."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return _Encoded({k: v[idx] for k, v in self.encoded.items()}, self.trim)

    def fetch_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The collated batch of ``indices`` (what the trainer asks for), cut to its longest sentence with
        ``trim``."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        inputs = {k: v[idx] for k, v in self.encoded.items()}
        if self.trim is not None:
            keep = max(int(inputs["attention_mask"].sum(1).max()), 1)
            cut = slice(None, keep) if self.trim == "right" else slice(-keep, None)
            inputs = {k: v[:, cut] if v.dim() > 1 else v for k, v in inputs.items()}
        return {"inputs": inputs, "targets": torch.full((len(idx),), UNLABELLED, dtype=torch.long)}


def _read_sentences(file: Path, key: str, text_field: str) -> list[str]:
    if file.suffix.lower() in (".jsonl", ".json"):
        rows = _read_rows(file, key)
        if rows and text_field not in rows[0]:
            raise DataFileError(f"data.text_field: field '{text_field}' is not in '{file}' ({key}; fields: "
                                f"{', '.join(map(str, rows[0]))})")
        out = [str(r.get(text_field, "")) for r in rows]
    else:
        out = file.read_text(encoding="utf-8").splitlines()
    out = [s.strip() for s in out if s.strip()]
    if not out:
        raise DataFileError(f"{key}: '{file}' holds no sentence")
    return out


@DATASETS.register(aliases=("text", "sentence_file"))
def sentences(
    path: str,
    tokenizer: str,
    max_length: int = 128,
    padding: str = "max_length",
    text_field: str = "text",
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> DataBundle:
    """Unlabelled sentences for distillation: a ``.txt`` file (one a line) or ``.jsonl`` (``text_field``).

    Each sentence is tokenized with the tokenizer saved in the model folder ``tokenizer`` (the engine fills
    it in from the ``model`` section's ``hf`` / ``sentence_transformers`` folder when the data section has
    none), truncated to ``max_length`` tokens and padded to ``max_length`` (``padding: max_length``), to
    the longest sentence of the file (``padding: longest``) or, in each training and evaluation batch, to
    the longest sentence of that batch (``padding: batch``; single items and the bundle's ``example``
    keep ``max_length``). Items are
    ``{"inputs": {"input_ids", "attention_mask", ...}, "targets": -100}`` (no label).

    Raises:
        DataFileError: a missing file or folder, a tokenizer missing from the folder, an empty file, an
            unknown ``padding``.
    """
    if padding not in _PADDING:
        raise DataFileError(f"data.padding: must be one of {', '.join(_PADDING)}, got {padding!r}")
    if not isinstance(max_length, int) or max_length < 1:
        raise DataFileError(f"data.max_length: must be a positive integer, got {max_length!r}")
    _need(path, "data.path")
    tok = load_tokenizer(tokenizer)

    def load(file: Any, key: str) -> _Encoded:
        texts = _read_sentences(_need(file, key), key, text_field)
        enc = tok(texts, max_length=max_length, truncation=True,
                  padding="max_length" if padding == "batch" else padding, return_tensors="pt")
        trim = str(getattr(tok, "padding_side", "right")) if padding == "batch" else None
        return _Encoded({k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}, trim)

    train, val, test = _bundle(load, path, val_path, test_path, val_fraction, test_fraction, seed)
    return _make_bundle(train, val, test)


# ----------------------------------------------------------------------------------- Hugging Face files
@DATASETS.register(aliases=("hf_datasets", "load_from_disk"))
def hf_files(
    path: str,
    label: str = "label",
    features: Sequence[str] | None = None,
    format: str | None = None,
    split: str = "train",
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    label_fraction: float = 1.0,
) -> DataBundle:
    """Local Hugging Face ``datasets`` files as a table: ``load_dataset(format, data_files=path)`` for a
    file (``format``: ``csv``, ``json``, ``parquet``; default from the suffix) or ``load_from_disk(path)``
    for a folder written by ``save_to_disk`` (a ``DatasetDict`` gives its ``split``). Columns as
    :func:`table`. Needs the ``datasets`` package; nothing is downloaded.

    Raises:
        DataFileError: ``datasets`` not installed, a missing file or folder, a missing column.
    """
    try:
        import datasets as hf_datasets
    except ImportError:
        hf_datasets = None
    if not hasattr(hf_datasets, "load_dataset"):  # not installed (or a plain folder named datasets/)
        raise DataFileError("data: the hf_files dataset needs the Hugging Face datasets package: "
                            "pip install datasets")
    def read(file: Any, key: str) -> tuple[list[dict[str, Any]], Path]:
        p = Path(str(file))
        if p.is_dir():
            ds = hf_datasets.load_from_disk(str(p))
            if isinstance(ds, hf_datasets.DatasetDict):
                if split not in ds:
                    raise DataFileError(f"data.split: '{p}' has no split '{split}' (splits: {', '.join(ds)})")
                ds = ds[split]
        else:
            p = _need(file, key)
            fmt = format or {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(p.suffix.lower())
            if fmt is None:
                raise DataFileError(f"data.format: cannot tell the format of '{p}'; set csv, json or parquet")
            ds = hf_datasets.load_dataset(fmt, data_files=str(p), split="train")
        return [dict(r) for r in ds], p

    return _table_bundle(read, path, label, features, val_path, test_path, val_fraction, test_fraction, seed,
                         label_fraction)


# ------------------------------------------------------------------------------------------- factories
@DATASETS.register(aliases=("factory", "python"))
def data_factory(factory: str, args: Mapping[str, Any] | None = None) -> DataBundle:
    """Your own data: ``factory: "my_pkg.data:build"`` (imported with importlib) called with ``args``.

    A config naming a module runs that module's code, like a Python script importing it.

    Raises:
        FactoryImportError: the module or attribute cannot be imported (both named).
        DataFileError: the factory raised, or returned something other than a :class:`DataBundle`.
    """
    fn = import_factory(factory, "data.factory")
    if args is not None and not isinstance(args, Mapping):
        raise DataFileError(f"data.args: must be a mapping of keyword arguments, got {type(args).__name__}")
    try:
        out = fn(**dict(args or {}))
    except TypeError as exc:
        raise DataFileError(f"data.args: {factory}() does not take these arguments ({exc})") from None
    if not isinstance(out, DataBundle):
        raise DataFileError(f"data.factory: {factory}() returned a {type(out).__name__}, not a "
                            f"torchpare.datasets.DataBundle(train=..., val=..., test=..., example=...)")
    return out
