"""Wrap one ``torch.nn`` module class as a connector (Flatten, AdaptiveAvgPool2d, Upsample ...)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from torchpare.distill.connectors._lookup import lookup_module_class
from torchpare.registry import CONNECTORS

__all__ = ["TorchNNConnector"]


@CONNECTORS.register(aliases=("TorchNN",))
class TorchNNConnector(nn.Module):
    """``forward(x) = torch.nn.<module_name>(**module_args)(x)``.

    The class is looked up with ``getattr`` in ``torch.nn`` (never evaluated as code); its parameters,
    if any, are trained and saved with the connector.

    Args:
        module_name: e.g. ``"Flatten"``, ``"AdaptiveAvgPool2d"``, ``"Upsample"``.
        module_args: Keyword arguments for the module's constructor.

    Raises:
        AttributeError: no such ``torch.nn`` class (the message suggests close names).
        TypeError: the name is not an ``nn.Module`` class, or ``module_args`` do not fit it.

    Example:
        >>> import torch
        >>> TorchNNConnector("Flatten")(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 48])
    """

    def __init__(self, module_name: str, module_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        cls = lookup_module_class(module_name, "TorchNNConnector")
        self.module_name = module_name
        try:
            self.module = cls(**dict(module_args or {}))
        except TypeError as exc:
            raise TypeError(
                f"TorchNNConnector: torch.nn.{module_name}(**{module_args!r}) failed: {exc}"
            ) from exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the wrapped module to ``x``."""
        return self.module(x)
