"""Measured latency of a model, robust enough to steer a search on a busy machine.

:func:`measure_latency_ms` times eval forwards: a few warm-up calls (first-call allocations, lazy
kernel selection), then ``repeats`` timed runs of ``number`` back-to-back forwards each (``number``
chosen so one run lasts at least ``min_run_ms``, above the timer's resolution), and returns the
**median** per forward (one slow run, e.g. another process taking the core, does not move it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["measure_latency_ms"]


def _sync(inputs: Any) -> None:
    """Wait for queued accelerator work (timings of asynchronous devices need it)."""
    tensors = inputs.values() if isinstance(inputs, Mapping) else (
        inputs if isinstance(inputs, tuple | list) else (inputs,))
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
            return


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


@torch.inference_mode()
def measure_latency_ms(model: nn.Module, inputs: Any, *, warmup: int = 3, repeats: int = 15,
                       number: int | None = None, min_run_ms: float = 2.0) -> float:
    """Median wall time of one eval-mode forward of ``model`` on ``inputs``, in milliseconds.

    The inputs stay where they are (put them on the model's device); the model's train/eval mode is
    restored afterwards.

    Args:
        model: The model to time.
        inputs: A tensor, a tuple of positional arguments or a dict of keyword arguments.
        warmup: Untimed forwards first.
        repeats: Timed runs; the median over them is returned.
        number: Forwards per timed run; ``None``: enough for one run to last ``min_run_ms``.
        min_run_ms: The shortest timed run when ``number`` is automatic.

    Returns:
        Milliseconds per forward.

    Raises:
        ValueError: ``repeats`` or ``number`` below 1, or a negative ``warmup``.

    Example:
        >>> ms = measure_latency_ms(torch.nn.Linear(8, 4), torch.zeros(2, 8), repeats=3)
        >>> ms > 0
        True
    """
    if repeats < 1 or (number is not None and number < 1) or warmup < 0:
        raise ValueError(f"measure_latency_ms(): repeats and number must be >= 1 and warmup >= 0, got "
                         f"repeats={repeats}, number={number}, warmup={warmup}.")
    was = model.training
    model.eval()
    try:
        for _ in range(warmup):
            _call(model, inputs)
        _sync(inputs)
        if number is None:
            t0 = time.perf_counter()
            _call(model, inputs)
            _sync(inputs)
            once = max(time.perf_counter() - t0, 1e-7)
            number = max(1, math.ceil(min_run_ms * 1e-3 / once))
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(number):
                _call(model, inputs)
            _sync(inputs)
            runs.append((time.perf_counter() - t0) / number)
    finally:
        model.train(was)
    return 1e3 * statistics.median(runs)
