"""A linear map from student to teacher feature size."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.registry import CONNECTORS

__all__ = ["LinearConnector"]


@CONNECTORS.register(aliases=("Linear",))
class LinearConnector(nn.Module):
    """``y = x W^T + b`` on the last dim; inputs with more than 2 dims are flattened from dim 1 first
    when ``flatten=True`` (e.g. a conv feature map to a vector).

    Args:
        in_features: Student feature size (after flattening).
        out_features: Teacher feature size.
        bias: Learn a bias.
        flatten: Flatten ``(N, ...)`` inputs to ``(N, -1)`` first.

    Example:
        >>> import torch
        >>> LinearConnector(16, 64)(torch.randn(4, 16)).shape
        torch.Size([4, 64])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` (``(..., in_features)``, or ``(N, ...)`` with ``flatten``) to ``out_features``."""
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return self.linear(x)
