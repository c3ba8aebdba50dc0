"""Model statistics for reports: parameters, FLOPs, CPU latency, size on disk.

Example:
    >>> import torch
    >>> stats = model_stats(torch.nn.Linear(64, 10), torch.zeros(1, 64), repeats=2)
    >>> stats["params"], stats["flops"]
    (650, 1280)
"""

from __future__ import annotations

import inspect
import io
import statistics
import time
from typing import Any

import torch
from torch import nn

__all__ = ["count_params_flops", "cpu_latency_ms", "compare_latency_ms", "size_on_disk", "model_stats"]


def count_params_flops(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """``{"params", "flops"}`` through :func:`torchpare.prune.count` (FLOPs of one eval-mode forward).

    The model runs in eval mode (batch-norm statistics are not touched) and gets its mode back.
    """
    from torchpare.prune import count

    was_training = model.training
    model.eval()
    try:
        out = count(model, example_inputs)
    finally:
        model.train(was_training)
    return {"params": int(out["params"]), "flops": int(out["flops"])}


def compare_latency_ms(models: dict[str, nn.Module], example_inputs: Any, repeats: int = 15) -> dict[str, float]:
    """CPU latency of several models measured side by side (interleaved rounds, median per model).

    Interleaving spreads machine noise over every model alike, so ratios stay meaningful on a busy machine.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(cpu_latency_ms(model, example_inputs, repeats=1, warmup=1))
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, example_inputs: Any, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time (ms) of one eval forward on CPU over ``repeats`` runs (the model is moved back).

    ``example_inputs``: a tensor, or a dict of tensors: passed as keyword arguments when the model's
    ``forward`` takes every key (a Hugging Face model, as the trainer calls it), else as the one positional
    argument (a ``SentenceTransformer``'s feature dict).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval().cpu()
    # Not model_io.call_model on purpose: a dict goes as keywords only when forward takes every key (else
    # it is the one positional argument: the text demo's student takes the tokenizer's dict), and the
    # inputs are moved to the CPU first.
    x = {k: v.cpu() for k, v in example_inputs.items()} if isinstance(example_inputs, dict) else example_inputs.cpu()
    run = model
    if isinstance(x, dict):
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - nn.Module.forward always has a signature
            params = {}
        if x and all(k in params for k in x):
            def run(inputs: dict[str, Any]) -> Any:
                return model(**inputs)
    try:
        for _ in range(warmup):
            run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
    finally:
        model.to(device).train(was_training)
    return statistics.median(times) * 1e3


def size_on_disk(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def model_stats(model: nn.Module, example_inputs: Any, batch_inputs: Any = None,
                repeats: int = 30) -> dict[str, Any]:
    """Parameters, FLOPs (per ``example_inputs``), CPU latency (per ``batch_inputs``), size on disk."""
    stats: dict[str, Any] = count_params_flops(model, example_inputs)
    stats["latency_ms"] = cpu_latency_ms(model, batch_inputs if batch_inputs is not None else example_inputs,
                                         repeats=repeats)
    stats["size_bytes"] = size_on_disk(model)
    return stats
