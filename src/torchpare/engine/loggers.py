"""Metric loggers a run writes besides ``metrics.jsonl``: CSV (``metrics.csv``) and TensorBoard.

They are chosen by ``schedule.loggers`` (``[jsonl, csv, tensorboard]``) and receive the same records
as ``metrics.jsonl``: one per step (``kind: step``: loss, learning rate, each named loss) and one
per epoch (``kind: epoch``: mean training loss, validation metrics, time, samples per second).
On ``--resume`` each drops what was logged after the checkpoint, like ``metrics.jsonl``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp())
    >>> log = CsvLogger(run / "metrics.csv")
    >>> log.log({"kind": "step", "name": "train", "epoch": 0, "step": 1, "loss": 0.5, "lr": 0.01})
    >>> log.log({"kind": "epoch", "name": "train", "epoch": 0, "step": 1, "train_loss": 0.5})
    >>> (run / "metrics.csv").read_text().splitlines()[0]
    'kind,name,epoch,step,loss,lr,train_loss'
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
from pathlib import Path
from typing import Any

from torchpare._utils import atomic_write_bytes
from torchpare.engine.schedule import LOGGERS

__all__ = ["CsvLogger", "TensorBoardLogger", "LoggerError", "build_loggers", "CSV_COLUMNS"]

# The columns a CSV starts with, in this order; other keys (named losses) follow in first-seen order.
CSV_COLUMNS = ("kind", "name", "epoch", "step", "loss", "lr", "train_loss", "val_accuracy", "val_loss",
               "epoch_time_s", "samples_per_s")


class LoggerError(ValueError):
    """A logger cannot be used (unknown name, or its package is not installed)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class CsvLogger:
    """``metrics.csv``: one row per record, a header with every key seen so far.

    A record with a key the header lacks (e.g. a loss that appears later) rewrites the file with the
    wider header, so every row stays aligned; other rows leave that column empty.

    Args:
        path: The ``.csv`` file; its folder is created.
        resume_step: Keep only the rows with ``step <= resume_step`` of an existing file (``None``:
            start an empty file).
    """

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                rows = [r for r in reader if _step_of(r) <= resume_step]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="", lineterminator="\n")
        if self.columns:
            writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` as a row (flushed at once)."""
        row = {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        new = [k for k in row if k not in self.columns]
        if new:
            known = set(self.columns) | set(new)
            head = [c for c in CSV_COLUMNS if c in known]
            rest = [c for c in self.columns if c not in CSV_COLUMNS] + [c for c in new if c not in CSV_COLUMNS]
            old_rows = []
            if self.path.is_file() and self.columns:
                with open(self.path, newline="", encoding="utf-8") as fh:
                    old_rows = list(csv.DictReader(fh))
            self.columns = head + rest
            self._rewrite([*old_rows, row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, restval="", lineterminator="\n").writerow(row)

    def close(self) -> None:
        """Nothing to release (every row is written at once)."""


def _step_of(row: dict[str, str]) -> int:
    try:
        return int(float(row.get("step") or 0))
    except ValueError:
        return 0


class TensorBoardLogger:
    """TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard.SummaryWriter``).

    Scalars are named ``<run name>/<key>`` for steps (``train/loss``, ``train/lr``, ``distill/kd``) and
    ``<run name>/epoch/<key>`` for epochs (``train/epoch/val_accuracy``), against the global step.

    Args:
        log_dir: The event file folder (``<run>/tensorboard``).
        resume_step: On ``--resume``, events after this step are purged from the log.

    Raises:
        LoggerError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str], resume_step: int | None = None) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise LoggerError(
                "schedule.loggers: 'tensorboard' needs the tensorboard package, which is not installed; "
                "pip install 'torchpare[tensorboard]' (or tensorboard), or remove it from the list."
            )
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        """Add every numeric value of ``record`` as a scalar at ``record["step"]``."""
        step = int(record.get("step", 0))
        name = str(record.get("name", "train"))
        prefix = f"{name}/epoch/" if record.get("kind") == "epoch" else f"{name}/"
        for key, value in record.items():
            if key in ("kind", "name", "step", "epoch"):
                continue
            number = _number(value)
            if number is not None:
                self.writer.add_scalar(prefix + key, number, step)
        if record.get("kind") == "epoch":
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def build_loggers(names: list[str] | tuple[str, ...], run_dir: str | os.PathLike[str],
                  resume_step: int | None = None) -> list[Any]:
    """The loggers named in ``schedule.loggers`` (``"jsonl"`` is ``metrics.jsonl``, written by the trainer).

    Args:
        names: Logger names from ``("jsonl", "csv", "tensorboard")``.
        run_dir: The run folder.
        resume_step: The step a resumed run continues from (``None``: a new run).

    Returns:
        Objects with ``log(record)`` and ``close()``.

    Raises:
        LoggerError: an unknown name, or ``tensorboard`` without its package.

    Example:
        >>> import tempfile
        >>> [type(x).__name__ for x in build_loggers(["jsonl", "csv"], tempfile.mkdtemp())]
        ['CsvLogger']
    """
    run_dir = Path(run_dir)
    out: list[Any] = []
    for name in names:
        if name not in LOGGERS:
            raise LoggerError(f"schedule.loggers: unknown logger {name!r}; use names from {', '.join(LOGGERS)}.")
        if name == "csv":
            out.append(CsvLogger(run_dir / "metrics.csv", resume_step))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(run_dir / "tensorboard", resume_step))
    return out
