"""Wrap one ``torch.nn.functional`` function as a connector (resize, pool, normalise ...)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchpare.distill.connectors._lookup import lookup_public
from torchpare.registry import CONNECTORS

__all__ = ["TorchFunctionalConnector"]


@CONNECTORS.register(aliases=("TorchFunctional",))
class TorchFunctionalConnector(nn.Module):
    """``forward(x) = torch.nn.functional.<function_name>(x, **func_args)``.

    The name is looked up with ``getattr`` in ``torch.nn.functional`` (never evaluated as code).

    Args:
        function_name: e.g. ``"interpolate"``, ``"adaptive_avg_pool2d"``, ``"normalize"``.
        func_args: Keyword arguments for the function.

    Raises:
        AttributeError: no such public function (the message suggests close names).

    Example:
        >>> import torch
        >>> c = TorchFunctionalConnector("interpolate", {"size": (8, 8), "mode": "nearest"})
        >>> c(torch.randn(1, 3, 4, 4)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, function_name: str, func_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.func = lookup_public(F, function_name, "TorchFunctionalConnector", "function")
        self.function_name = function_name
        self.func_args = dict(func_args or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the wrapped function to ``x``."""
        return self.func(x, **self.func_args)

    def extra_repr(self) -> str:
        return f"function_name={self.function_name!r}, func_args={self.func_args}"
