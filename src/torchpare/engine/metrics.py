"""Metrics as JSON lines: one object per line, appended as training goes, truncated on resume.

Example:
    >>> import tempfile, os
    >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "metrics.jsonl"))
    >>> log.write({"kind": "step", "step": 1, "loss": 0.5})
    >>> log.write({"kind": "step", "step": 2, "loss": 0.4})
    >>> log.truncate_after(step=1)
    >>> [r["step"] for r in read_metrics(log.path)]
    [1]
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torchpare._utils import atomic_write_bytes

__all__ = ["MetricsLog", "read_metrics"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every complete JSON line of ``path`` (a half-written last line from a crash is skipped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class MetricsLog:
    """Append-only JSON-lines writer.

    Args:
        path: The ``.jsonl`` file; its folder is created.
        enabled: ``False`` turns every call into a no-op (processes other than rank 0).
    """

    def __init__(self, path: str | os.PathLike[str], enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (flushed at once, so a killed run keeps what it logged)."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def reset(self) -> None:
        """Start an empty log (a fresh run in a used folder)."""
        if self.enabled and self.path.exists():
            self.path.unlink()

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step`` greater than ``step``: they were logged after the checkpoint."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
