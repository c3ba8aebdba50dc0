"""Parameter and FLOP counts of a model on example inputs, via ``torch.utils.flop_counter``.

FLOPs are what :class:`torch.utils.flop_counter.FlopCounterMode` reports for one forward pass:
``2 * MACs`` of the matmul and convolution families it knows (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
``convolution``, scaled-dot-product attention, ...). Element-wise ops, normalisation, pooling and
activations count as 0. So a ``Linear(in, out)`` on ``N`` rows is ``2 * N * in * out`` FLOPs (the
bias add is not counted) and a ``Conv2d`` is ``2 * N * H_out * W_out * C_out * (C_in / groups) * k_h * k_w``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count"]


def _call(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, tuple):
        return model(*example_inputs)
    return model(example_inputs)


def count(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Count the parameters and the forward FLOPs of ``model`` on ``example_inputs``.

    Parameters shared between modules (tied embeddings, a module called twice) count once; buffers
    (BatchNorm running statistics, position ids) are not parameters and do not count. FLOPs come
    from one forward pass under ``torch.no_grad()`` in the model's current train/eval mode, counted
    by ``FlopCounterMode`` as ``2 * MACs`` of matmuls and convolutions (see the module docstring).

    Args:
        model: Any ``nn.Module``; it is not modified.
        example_inputs: A tensor (``model(x)``), a tuple (``model(*x)``) or a dict of keyword
            arguments (``model(**x)``).

    Returns:
        ``{"params": int, "flops": int}``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> count(nn.Linear(4, 3), torch.zeros(2, 4))
        {'params': 15, 'flops': 48}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count(): model must be an nn.Module, got {type(model).__name__}.")
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        _call(model, example_inputs)
    return {"params": int(params), "flops": int(counter.get_total_flops())}
