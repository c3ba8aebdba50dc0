"""Progress: a rich bar per epoch on a terminal, plain flushed lines on stderr off one.

On a terminal (stdout is a TTY) :class:`EpochProgress` shows a bar with the loss, steps/s, ETA and the
last validation metric. Off a terminal (``torchpare train cfg.yaml > log``, CI, ``nohup``)
:class:`ProgressLines` prints one line per epoch, and every ``schedule.log_every`` steps, to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["EpochProgress", "ProgressLines", "bar_on_terminal", "format_stats"]


def bar_on_terminal() -> bool:
    """Whether progress shows as a rich bar (stdout is a terminal) rather than as lines on stderr."""
    return sys.stdout.isatty()


def format_stats(stats: dict[str, Any]) -> str:
    """``key=value`` pairs, numbers with 4 significant digits.

    Example:
        >>> format_stats({"loss": 0.123456, "lr": 0.001, "note": "x"})
        'loss=0.1235 lr=0.001 note=x'
    """
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


class EpochProgress:
    """Context manager showing one bar for one epoch.

    Args:
        total: Steps in the epoch.
        description: Text left of the bar (e.g. ``"epoch 3/10"``).
        enabled: ``False`` (``--quiet``, rank > 0) shows nothing; ``None`` shows the bar only when
            stdout is a terminal.
        completed: Steps already done (a resumed epoch).
        metric: Text shown after the stats, e.g. the last validation metric ``"val_accuracy=0.91"``.

    Example:
        >>> with EpochProgress(total=3, description="epoch 1", enabled=False) as bar:
        ...     bar.advance(loss=0.5)
    """

    def __init__(self, total: int, description: str, enabled: bool | None = None, completed: int = 0,
                 metric: str = "") -> None:
        self.total = total
        self.description = description
        self.enabled = bar_on_terminal() if enabled is None else enabled
        self.completed = completed
        self.metric = metric
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.completed, stats="", speed=""
            )
        return self

    def advance(self, **stats: float) -> None:
        """Move one step and show ``stats`` (e.g. ``loss=0.31``)."""
        if self._progress is None:
            return
        text = " ".join(x for x in (format_stats(stats), self.metric) if x)
        task = self._progress.tasks[0]
        speed = f"{task.speed:.1f} steps/s" if task.speed else ""
        self._progress.update(self._task, advance=1, stats=text, speed=speed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None


class ProgressLines:
    """Plain progress lines on a stream (stderr by default), flushed as they are written.

    One line at the end of each epoch (step, mean loss, learning rate, samples/s, validation metrics,
    time) and, with ``log_every > 0``, one every ``log_every`` steps (step, loss and each named loss,
    learning rate, samples/s since the last line).

    Args:
        name: The run's label (``train``, ``distill``, ...), first on each line.
        epochs: Epochs in the schedule.
        log_every: A step line every N global steps (0: epoch lines only).
        enabled: ``False`` prints nothing.
        stream: Where lines go; ``None``: ``sys.stderr`` at the time of each line.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> lines = ProgressLines("train", epochs=2, log_every=2, stream=out)
        >>> for step in (1, 2):
        ...     lines.step({"epoch": 0, "step": step, "loss": 0.5, "lr": 0.01}, samples=8)
        >>> lines.epoch({"epoch": 0, "step": 2, "train_loss": 0.5, "val_accuracy": 0.75}, total_steps=4)
        >>> print(out.getvalue().splitlines()[1])
        train epoch 1/2 step 2/4 done: train_loss=0.5 val_accuracy=0.75
    """

    _SKIP = ("kind", "name", "epoch", "step")

    def __init__(self, name: str, epochs: int, log_every: int = 0, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.name, self.epochs, self.log_every, self.enabled = name, epochs, log_every, enabled
        self.stream = stream
        self._t = time.perf_counter()
        self._samples = 0

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(line, file=stream, flush=True)

    def step(self, record: dict[str, Any], samples: int) -> None:
        """Count one step of ``samples`` samples; print a line if its step is a multiple of ``log_every``."""
        self._samples += samples
        if not self.enabled or not self.log_every or int(record["step"]) % self.log_every:
            return
        now = time.perf_counter()
        speed = self._samples / max(now - self._t, 1e-9)
        self._t, self._samples = now, 0
        stats = {k: v for k, v in record.items() if k not in self._SKIP}
        self._write(f"{self.name} epoch {int(record['epoch']) + 1}/{self.epochs} step {record['step']} "
                    f"{format_stats(stats)} samples/s={speed:.4g}")

    def epoch(self, record: dict[str, Any], total_steps: int, lr: float | None = None) -> None:
        """Print the end-of-epoch line for ``record`` (the ``kind: epoch`` metrics record)."""
        self._t, self._samples = time.perf_counter(), 0
        if not self.enabled:
            return
        stats = {k: v for k, v in record.items() if k not in self._SKIP}
        if lr is not None:
            stats = {"train_loss": stats.pop("train_loss", float("nan")), "lr": lr, **stats}
        self._write(f"{self.name} epoch {int(record['epoch']) + 1}/{self.epochs} step {record['step']}/"
                    f"{total_steps} done: {format_stats(stats)}")
