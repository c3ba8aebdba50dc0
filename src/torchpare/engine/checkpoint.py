"""Atomic training checkpoints with validation: a bad file is an error, never a silent fresh start.

A checkpoint is one ``torch.save`` dict written through a temp file and a rename, so a run killed
while writing keeps the previous checkpoint. It carries a ``fingerprint`` (parameter names and
shapes of the trained objective, plus the training settings that change results); loading into a
different set-up raises :class:`CheckpointMismatchError` listing what differs.

Example:
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "last.pt")
    >>> model = torch.nn.Linear(2, 2)
    >>> save_checkpoint(path, {"model": model.state_dict()}, fingerprint=model_fingerprint(model))
    >>> sorted(load_checkpoint(path, expected_fingerprint=model_fingerprint(model)))
    ['fingerprint', 'format', 'model']
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare._utils import atomic_save

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "save_checkpoint",
    "load_checkpoint",
    "model_fingerprint",
    "config_fingerprint",
    "file_digest",
    "CheckpointFiles",
    "CHECKPOINT_FORMAT",
    "RESUME_MAY_CHANGE",
    "CHECKPOINT_FILE_KEYS",
]

CHECKPOINT_FORMAT = "torchpare-checkpoint-v1"


# Config keys that may differ between a run and its --resume: how long it runs and how it logs. Every
# other key of the resolved config is part of the checkpoint's fingerprint.
RESUME_MAY_CHANGE = (
    "name",
    "task",
    "output",
    "schedule.epochs",
    "schedule.max_steps",
    "schedule.quiet",
    "schedule.checkpoint_every",
    "schedule.keep_checkpoints",
)
# Config keys holding weight files: the fingerprint records the file's SHA-256, not only its path.
CHECKPOINT_FILE_KEYS = ("checkpoint", "teacher_ckpt", "teacher_ckpts")
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """The checkpoint file is missing, unreadable, truncated or not a torchpare checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a different model or training set-up."""


def model_fingerprint(module: nn.Module, **settings: Any) -> dict[str, Any]:
    """Names and shapes of every parameter and buffer of ``module``, plus ``settings``.

    Args:
        module: The trained objective (student, connectors, ...).
        **settings: Plain values that must match on resume (seed, batch size, world size, ...).
    """
    shapes = {n: list(t.shape) for n, t in module.state_dict().items()}
    return {"state_shapes": shapes, "settings": {k: settings[k] for k in sorted(settings)}}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of every file under a folder (relative names and contents).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "w.bin")
        >>> open(p, "wb").write(b"abc")
        3
        >>> file_digest(p)[:12]
        'ba7816bf8f01'
    """
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _flatten(value: Any, key: str, out: dict[str, Any], files: bool) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(v, f"{key}.{k}" if key else str(k), out, files or str(k) in CHECKPOINT_FILE_KEYS)
        return
    if files and isinstance(value, str) and Path(value).exists():
        out[key] = f"{value} (sha256 {file_digest(value)[:16]})"
        return
    out[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def config_fingerprint(
    cfg: Mapping[str, Any], may_change: tuple[str, ...] = RESUME_MAY_CHANGE
) -> dict[str, Any]:
    """The resolved config as flat ``{"config.<key.path>": value}`` settings for :func:`model_fingerprint`.

    Keys in ``may_change`` (and below them) are left out; weight files under :data:`CHECKPOINT_FILE_KEYS`
    are recorded with their SHA-256, so a retrained teacher at the same path is a different run.

    Example:
        >>> config_fingerprint({"schedule": {"epochs": 3, "lr": 0.1}, "model": {"type": "M"}})
        {'config.schedule.lr': 0.1, 'config.model.type': 'M'}
    """
    flat: dict[str, Any] = {}
    _flatten(dict(cfg), "", flat, False)
    keep = {
        k: v for k, v in flat.items()
        if not any(k == m or k.startswith(m + ".") for m in may_change)
    }
    return {f"config.{k}": v for k, v in keep.items()}


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """Write ``state`` with a format tag and ``fingerprint`` to ``path`` atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, **state}
    atomic_save(path, lambda tmp: torch.save(payload, tmp))


def _diff_fingerprints(saved: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    s_shapes, e_shapes = saved.get("state_shapes", {}), expected.get("state_shapes", {})
    missing = [k for k in e_shapes if k not in s_shapes]
    extra = [k for k in s_shapes if k not in e_shapes]
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for k in e_shapes:
        if k in s_shapes and list(s_shapes[k]) != list(e_shapes[k]):
            problems.append(f"tensor {k!r} has shape {s_shapes[k]} in the checkpoint, {e_shapes[k]} now")
    s_set, e_set = saved.get("settings", {}), expected.get("settings", {})
    for k in sorted(set(s_set) | set(e_set)):
        if s_set.get(k) != e_set.get(k):
            problems.append(f"setting {k!r} is {s_set.get(k)!r} in the checkpoint, {e_set.get(k)!r} now")
    return problems


def load_checkpoint(
    path: str | os.PathLike[str],
    expected_fingerprint: dict[str, Any] | None = None,
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The checkpoint file.
        expected_fingerprint: When given, the saved fingerprint must equal it.
        map_location: Passed to ``torch.load``.

    Returns:
        The saved dict (``format``, ``fingerprint`` and the state entries).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt or not a torchpare checkpoint.
        CheckpointMismatchError: the fingerprint differs; the message lists every difference.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_checkpoint(): no checkpoint file at '{path}'.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt archives
        # torch's weights_only message advises weights_only=False (unsafe); keep only its actual cause
        text = str(exc).split("WeightsUnpickler error:", 1)[-1]
        cause = next((ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln), "")
        raise CheckpointError(
            f"load_checkpoint(): '{path}' is corrupt or truncated ({type(exc).__name__}"
            f"{': ' + cause[:200] if cause else ''}). Delete it to start over, or resume from "
            f"another checkpoint (--resume PATH)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"load_checkpoint(): '{path}' is not a torchpare training checkpoint "
            f"(format tag {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})."
        )
    if expected_fingerprint is not None:
        problems = _diff_fingerprints(payload.get("fingerprint", {}), expected_fingerprint)
        if problems:
            raise CheckpointMismatchError(
                f"load_checkpoint(): '{path}' does not match this run: "
                + "; ".join(problems)
                + ". Use the same config, or start a new run folder."
            )
    return payload


class CheckpointFiles:
    """The checkpoints of one run folder: ``step-<N>.pt`` files, ``last.pt`` (the newest) and ``best.pt``.

    Every save writes ``step-<global step>.pt`` atomically, points ``last.pt`` at it (a hard link, or a
    copy where links are not supported) and keeps the newest ``keep_last`` step files plus the one with
    the best ``best_metric`` (``best.pt``); older ones are deleted. Temp files left by a killed writer
    are removed when the object is made.

    Args:
        directory: The ``checkpoints`` folder.
        keep_last: How many of the newest step files to keep (>= 1).
        best_metric: Epoch metric that picks ``best.pt`` (``val_accuracy``: higher is better; a name
            ending in ``loss``: lower is better).

    Example:
        >>> import tempfile
        >>> files = CheckpointFiles(tempfile.mkdtemp(), keep_last=1)
        >>> for step in (1, 2, 3):
        ...     _ = files.save({"v": step}, {}, step=step, metric=[0.5, 0.9, 0.7][step - 1])
        >>> sorted(p.name for p in files.directory.iterdir())
        ['best.pt', 'last.pt', 'step-00000002.pt', 'step-00000003.pt']
    """

    def __init__(
        self, directory: str | os.PathLike[str], keep_last: int = 2, best_metric: str = "val_accuracy"
    ) -> None:
        if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
            raise ValueError(f"CheckpointFiles: keep_last must be an integer >= 1, got {keep_last!r}.")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best: dict[str, Any] | None = None  # {"value": float, "step": int}
        self.removed_temp_files = self.remove_temp_files()

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    def remove_temp_files(self) -> list[Path]:
        """Delete ``.<name>.*.tmp`` files a killed writer left behind; returns them."""
        if not self.directory.is_dir():
            return []
        leftovers = [p for p in self.directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers

    def step_files(self) -> list[Path]:
        """The ``step-<N>.pt`` files, newest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_FILE.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        lower = self.best_metric.endswith("loss")
        return value < self.best["value"] if lower else value > self.best["value"]

    def _point(self, name: str, target: Path) -> None:
        """``directory/name`` becomes ``target`` (hard link, else copy), replaced atomically."""
        tmp = self.directory / f".{name}.link.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(target, tmp)
        except OSError:
            shutil.copyfile(target, tmp)
        os.replace(tmp, self.directory / name)

    def save(self, state: dict[str, Any], fingerprint: dict[str, Any], step: int, metric: float | None = None) -> Path:
        """Write ``state`` as ``step-<step>.pt``, update ``last.pt`` / ``best.pt``, delete old step files."""
        path = self.directory / f"step-{step:08d}.pt"
        if metric is not None and self._better(float(metric)):
            self.best = {"value": float(metric), "step": int(step)}
        save_checkpoint(path, {**state, "best": dict(self.best) if self.best else {}}, fingerprint)
        self._point("last.pt", path)
        if self.best is not None and self.best["step"] == step:
            self._point("best.pt", path)
        best_name = f"step-{self.best['step']:08d}.pt" if self.best else None
        for old in self.step_files()[self.keep_last:]:
            if old.name != best_name:
                old.unlink(missing_ok=True)
        return path

    def candidates(self) -> list[Path]:
        """Files ``--resume`` tries, in order: ``last.pt``, then the step files newest first."""
        found = [self.last] if self.last.is_file() else []
        return found + self.step_files()

    def load_for_resume(
        self,
        expected_fingerprint: dict[str, Any] | None,
        path: str | os.PathLike[str] | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> tuple[dict[str, Any], Path]:
        """The checkpoint to resume from: ``path`` if given, else the newest readable one.

        An unreadable file is skipped with a warning naming it (the next older one is tried); a
        fingerprint mismatch is never skipped.

        Returns:
            ``(payload, path)``.

        Raises:
            CheckpointError: no checkpoint, or none readable (every broken file named).
            CheckpointMismatchError: the chosen checkpoint belongs to another set-up.
        """
        if path is not None:
            payload = load_checkpoint(path, expected_fingerprint, map_location)
            self.best = dict(payload.get("best") or {}) or None
            return payload, Path(path)
        tried: list[str] = []
        for cand in self.candidates():
            try:
                payload = load_checkpoint(cand, None, map_location)
            except CheckpointMismatchError:
                raise
            except CheckpointError as exc:
                tried.append(str(exc))
                continue
            if tried:
                warnings.warn(
                    f"resume: skipped unreadable checkpoint(s) ({'; '.join(tried)}); resuming from '{cand}'.",
                    stacklevel=2,
                )
            payload = load_checkpoint(cand, expected_fingerprint, map_location)
            self.best = dict(payload.get("best") or {}) or None
            return payload, cand
        if tried:
            raise CheckpointError("resume: no readable checkpoint; " + "; ".join(tried))
        raise CheckpointError(
            f"no checkpoint at '{self.last}'; run without --resume to start a new run."
        )
