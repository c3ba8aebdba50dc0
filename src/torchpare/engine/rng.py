"""Capture and restore every random number generator a training step can touch.

States are stored as plain Python values and tensors so that checkpoints load with
``torch.load(..., weights_only=True)`` (no pickled numpy objects).

Example:
    >>> import torch
    >>> state = capture_rng_state()
    >>> a = torch.rand(2)
    >>> restore_rng_state(state)
    >>> torch.equal(a, torch.rand(2))
    True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Return the states of Python, NumPy, torch CPU and (when available) every CUDA device.

    Returns:
        A dict of lists, ints and uint8 tensors, safe for ``weights_only`` loading.
    """
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`capture_rng_state`.

    Raises:
        KeyError: ``state`` lacks one of the ``python``, ``numpy`` or ``torch`` entries.
    """
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(
            f"restore_rng_state(): the saved RNG state lacks {missing}; the checkpoint is incomplete."
        )
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
