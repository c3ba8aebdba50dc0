"""A rich progress bar per epoch (loss, metric, steps/s, ETA), silent when not on a terminal."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["EpochProgress"]


class EpochProgress:
    """Context manager showing one bar for one epoch.

    Args:
        total: Steps in the epoch.
        description: Text left of the bar (e.g. ``"epoch 3/10"``).
        enabled: ``False`` (``--quiet``, rank > 0) shows nothing; ``None`` shows the bar only when
            stdout is a terminal.
        completed: Steps already done (a resumed epoch).

    Example:
        >>> with EpochProgress(total=3, description="epoch 1", enabled=False) as bar:
        ...     bar.advance(loss=0.5)
    """

    def __init__(self, total: int, description: str, enabled: bool | None = None, completed: int = 0) -> None:
        self.total = total
        self.description = description
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.completed = completed
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
        text = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
        task = self._progress.tasks[0]
        speed = f"{task.speed:.1f} steps/s" if task.speed else ""
        self._progress.update(self._task, advance=1, stats=text, speed=speed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
