"""Parameter and FLOP counts of a model on example inputs, via ``torch.utils.flop_counter``, and the
``(in, out)`` channels of one layer (:func:`module_channels`).

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

__all__ = ["count", "module_channels"]


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


def module_channels(module: nn.Module) -> tuple[int, int] | None:
    """``(in_channels, out_channels)`` read from a layer's weight shape (``None`` for weightless ones).

    Example:
        >>> module_channels(nn.Conv2d(3, 8, 3)), module_channels(nn.BatchNorm2d(8))
        ((3, 8), (8, 8))
    """
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd) and isinstance(weight, torch.Tensor):
        if module.transposed:
            return int(weight.shape[0]), int(weight.shape[1]) * module.groups
        return int(weight.shape[1]) * module.groups, int(weight.shape[0])
    if isinstance(module, nn.modules.batchnorm._NormBase):
        n = module.running_mean.shape[0] if weight is None else weight.shape[0]  # type: ignore[union-attr]
        return int(n), int(n)
    if not isinstance(weight, torch.Tensor):
        return None
    if isinstance(module, nn.Embedding):  # (vocabulary, width)
        return int(weight.shape[0]), int(weight.shape[1])
    if type(module).__name__ == "Conv1D" and weight.ndim == 2:  # transformers' GPT-2 layer: (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    if weight.ndim >= 2:
        return int(weight.shape[1]), int(weight.shape[0])
    return int(weight.shape[0]), int(weight.shape[0])
