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

import os
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
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "torchpare-checkpoint-v1"


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
        raise CheckpointError(
            f"load_checkpoint(): '{path}' is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Delete it to start over, or resume from "
            f"another checkpoint."
        ) from exc
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
