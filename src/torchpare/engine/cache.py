"""Teacher-output cache: a frozen teacher runs once per (sample, augmentation view), later epochs read disk.

:class:`TeacherCache` keeps the outputs of chosen teacher modules (``""`` = the teacher's return
value) in memory-mapped ``.npy`` arrays shaped ``(num_views, num_samples, *output_shape)``. Rows are
keyed by **(view, sample index)**: an augmented view of a sample only ever receives the outputs
computed on that very view (torchdistill keyed its cache by sample index alone, so every augmented
view got the outputs of whichever view was seen first).

:meth:`TeacherCache.as_module` returns a stand-in teacher whose sub-modules carry the recorded names
(``layer3``, ``fc``, ...) and replay the cached tensors, so a distillation algorithm's recorders work
unchanged; :class:`CachedObjective` tells the cache which samples and view the current batch holds.

Example:
    >>> import tempfile, torch
    >>> teacher = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    >>> cache = TeacherCache(teacher, tempfile.mkdtemp(), num_samples=8, sources=("0",))
    >>> x, idx = torch.randn(2, 4), torch.tensor([5, 1])
    >>> live = cache.outputs(x, idx)["0"]
    >>> cached = cache.outputs(torch.zeros(2, 4), idx)["0"]  # inputs unused on a hit
    >>> torch.equal(live, cached), cache.hits, cache.misses
    (True, 1, 1)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchpare._utils import atomic_write_bytes, get_submodule
from torchpare.model_io import call_model, logits_of
from torchpare.record import ModuleOutputsRecorder, RecorderManager

__all__ = ["TeacherCache", "CachedObjective", "teacher_fingerprint", "CacheMismatchError"]


class CacheMismatchError(ValueError):
    """The cache folder was written for another teacher, size or set of outputs."""


def teacher_fingerprint(teacher: nn.Module) -> str:
    """SHA-256 over the teacher's parameter and buffer names and values."""
    h = hashlib.sha256()
    for name, t in teacher.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


class _Replay(nn.Module):
    """Returns the tensor it is given: forward hooks on it see the cached teacher output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _CachedTeacher(nn.Module):
    def __init__(self, cache: TeacherCache) -> None:
        super().__init__()
        self._cache = [cache]  # a list: keep the cache out of the module tree
        for source in cache.sources:
            if not source:
                continue
            parent: nn.Module = self
            parts = source.split(".")
            for part in parts[:-1]:
                if not hasattr(parent, part):
                    parent.add_module(part, _Replay())
                parent = getattr(parent, part)
            if not hasattr(parent, parts[-1]):
                parent.add_module(parts[-1], _Replay())

    def forward(self, inputs: Any) -> Any:
        cache = self._cache[0]
        if cache.current is None:
            raise RuntimeError(
                "TeacherCache: the cached teacher ran outside a batch context; wrap the algorithm in "
                "CachedObjective(algo, cache) (or use `with cache.batch(indices, view):`)."
            )
        indices, view = cache.current
        outs = cache.outputs(inputs, indices, view)
        result = None
        for source in cache.sources:
            value = self.get_submodule(source)(outs[source]) if source else outs[source]
            result = value
        return outs.get("", result)


class TeacherCache:
    """Disk cache of a frozen teacher's outputs per (augmentation view, sample index).

    Args:
        teacher: The frozen teacher (run in eval mode under ``no_grad`` on a miss).
        path: Cache folder (``meta.json`` + one ``.npy`` memory map per source + ``filled.npy``).
        num_samples: Size of the training set (sample indices are ``0 .. num_samples-1``).
        num_views: Distinct augmentation views per sample (``1`` without augmentation).
        sources: Module names whose outputs are stored, in forward order; ``""`` is the teacher's
            own output.

    Raises:
        CacheMismatchError: ``path`` holds a cache of another teacher, size, views or sources.
        AttributeError: a source names no module of the teacher.
    """

    def __init__(self, teacher: nn.Module, path: str | os.PathLike[str], num_samples: int, num_views: int = 1,
                 sources: Sequence[str] = ("",)) -> None:
        if num_samples < 1 or num_views < 1:
            raise ValueError(f"TeacherCache: num_samples and num_views must be >= 1, got {num_samples}, {num_views}.")
        for s in sources:
            get_submodule(teacher, s, who=f"TeacherCache(sources={list(sources)!r})")
        self.teacher = teacher.eval()
        self.path = Path(path)
        self.num_samples, self.num_views, self.sources = num_samples, num_views, tuple(sources)
        self.current: tuple[torch.Tensor, int] | None = None
        self.hits = self.misses = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.path.mkdir(parents=True, exist_ok=True)
        self._meta = {"num_samples": num_samples, "num_views": num_views, "sources": list(self.sources),
                      "teacher": teacher_fingerprint(teacher)}
        meta_path = self.path / "meta.json"
        if meta_path.is_file():
            saved = json.loads(meta_path.read_text())
            diff = [k for k in self._meta if saved.get(k) != self._meta[k]]
            if diff:
                raise CacheMismatchError(
                    f"TeacherCache: '{self.path}' was written for another set-up ({', '.join(diff)} differ); "
                    f"use a new cache folder or delete this one."
                )
            self._meta = saved
            for s in self.sources:
                if s in saved.get("shapes", {}):
                    self._arrays[s] = np.load(self._file(s), mmap_mode="r+")
                    self._dtypes[s] = getattr(torch, saved["dtypes"][s])
        else:
            atomic_write_bytes(meta_path, json.dumps(self._meta).encode())
        filled = self.path / "filled.npy"
        self._filled = np.lib.format.open_memmap(filled, mode="r+" if filled.is_file() else "w+", dtype=np.bool_,
                                                 shape=(num_views, num_samples))
        self._filled_t = torch.from_numpy(self._filled)
        self._tensors = {s: torch.from_numpy(a) for s, a in self._arrays.items()}

    def _file(self, source: str) -> Path:
        return self.path / f"{source or '_output'}.npy"

    @contextlib.contextmanager
    def batch(self, indices: torch.Tensor, view: int = 0) -> Iterator[None]:
        """Within the block, the cached teacher module serves samples ``indices`` of view ``view``."""
        self.current = (indices, int(view))
        try:
            yield
        finally:
            self.current = None

    def as_module(self) -> nn.Module:
        """A stand-in teacher with one replay sub-module per source name (give it to the algorithm)."""
        return _CachedTeacher(self)

    @property
    def filled_fraction(self) -> float:
        return float(self._filled.mean())

    def _compute(self, inputs: Any) -> dict[str, torch.Tensor]:
        # torchpare.record captures the module outputs (the last call of a module called twice)
        recorders = RecorderManager({s: ModuleOutputsRecorder(s) for s in self.sources if s})
        recorders.initialize(self.teacher)
        with recorders, torch.no_grad():
            out = call_model(self.teacher, inputs)
        got = {s: logits_of(rec.get_record_data(-1)).detach() for s, rec in recorders}
        if "" in self.sources:
            got[""] = logits_of(out).detach()
        return got

    def _store(self, values: dict[str, torch.Tensor], idx: np.ndarray, view: int) -> None:
        for s, v in values.items():
            if s not in self._arrays:
                shape = (self.num_views, self.num_samples, *v.shape[1:])
                self._arrays[s] = np.lib.format.open_memmap(self._file(s), mode="w+", dtype=np.float32, shape=shape)
                self._dtypes[s] = v.dtype
                self._meta.setdefault("shapes", {})[s] = list(shape)
                self._meta.setdefault("dtypes", {})[s] = str(v.dtype).removeprefix("torch.")
                atomic_write_bytes(self.path / "meta.json", json.dumps(self._meta).encode())
            if s not in self._tensors:
                self._tensors[s] = torch.from_numpy(self._arrays[s])
            self._arrays[s][view, idx] = v.float().cpu().numpy()
        self._filled[view, idx] = True

    def outputs(self, inputs: Any, indices: torch.Tensor, view: int = 0) -> dict[str, torch.Tensor]:
        """The teacher outputs for samples ``indices`` of view ``view``: from disk when all are cached,
        else computed on ``inputs`` (the whole batch) and stored.

        Raises:
            IndexError: ``view`` or an index out of range (names the limit).
        """
        idx = indices.detach().to("cpu", torch.long)
        if not 0 <= view < self.num_views:
            raise IndexError(f"TeacherCache: view {view} out of range; this cache holds {self.num_views} view(s).")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise IndexError(f"TeacherCache: sample index {int(idx.max())} out of range 0..{self.num_samples - 1}.")
        if bool(self._filled_t[view].index_select(0, idx).all()):
            self.hits += 1  # torch views of the memory maps: no copy of the whole array, no numpy round trip
            return {s: self._tensors[s][view].index_select(0, idx).to(indices.device, self._dtypes[s])
                    for s in self.sources}
        self.misses += 1
        values = self._compute(inputs)
        self._store(values, idx.numpy(), view)
        return values

    def flush(self) -> None:
        """Write the memory maps to disk."""
        for arr in [*self._arrays.values(), self._filled]:
            arr.flush()  # type: ignore[union-attr]


class CachedObjective(nn.Module):
    """Runs ``algorithm.loss`` with the cache told which samples (and view) the batch holds.

    Build the algorithm with ``cache.as_module()`` as its teacher. Batches must carry ``indices``
    (datasets yielding ``(x, y, index)``) and, with augmentation, ``view``.

    Args:
        algorithm: A distillation algorithm (``loss``/``total_loss``) whose teacher is the cached module.
        cache: The :class:`TeacherCache`.
    """

    def __init__(self, algorithm: nn.Module, cache: TeacherCache) -> None:
        super().__init__()
        self.algorithm = algorithm
        self.cache = cache

    @property
    def student(self) -> nn.Module:
        return self.algorithm.student

    def loss(self, inputs: Any, targets: torch.Tensor | None = None, indices: torch.Tensor | None = None,
             view: Any = 0, **extra: Any) -> dict[str, torch.Tensor]:
        if indices is None:
            raise ValueError("CachedObjective.loss(): batches need sample indices (dataset items (x, y, index)).")
        view = int(view.flatten()[0]) if isinstance(view, torch.Tensor) else int(view)
        with self.cache.batch(indices, view):
            return self.algorithm.loss(inputs, targets, indices=indices, **extra)

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.algorithm.total_loss(losses)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        if hasattr(self.algorithm, "trainable_parameters"):
            return self.algorithm.trainable_parameters()
        return (p for p in self.algorithm.parameters() if p.requires_grad)

    def forward(self, inputs: Any) -> Any:
        return self.algorithm(inputs)
