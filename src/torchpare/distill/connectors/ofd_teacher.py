"""OFD teacher transform: clip pre-ReLU teacher features from below at a per-channel margin."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from torchpare.registry import CONNECTORS

__all__ = ["OFDTeacherConnector", "margin_from_bn"]


def margin_from_bn(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per-channel expected value of the negative pre-ReLU response, from BN's affine parameters.

    Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019), eq. (2): assuming the
    BN output of channel c is Gaussian with std ``s = |gamma_c|`` and mean ``m = beta_c``,
    ``margin_c = E[x | x < 0] = m - s * phi(m / s) / Phi(-m / s)``; where ``Phi(-m / s) <= 0.001``
    (hardly any negative response) the margin is ``-3 s`` as in the authors' code.

    Args:
        bn: The teacher's BatchNorm right before the ReLU whose input is distilled.

    Returns:
        A ``(C,)`` tensor on ``bn.weight``'s device and dtype.

    Raises:
        TypeError: ``bn`` is not an affine batch norm.

    Example:
        >>> import torch.nn as nn
        >>> bn = nn.BatchNorm2d(2)  # gamma = 1, beta = 0: E[x | x < 0] = -sqrt(2 / pi)
        >>> [round(v, 4) for v in margin_from_bn(bn).tolist()]
        [-0.7979, -0.7979]
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.weight is None or bn.bias is None:
        raise TypeError(
            f"margin_from_bn: expected an affine BatchNorm module, got {type(bn).__name__}; "
            "pass the teacher's BN layer right before the distilled ReLU."
        )
    margins = []
    for s, m in zip(bn.weight.detach().abs().tolist(), bn.bias.detach().tolist()):
        s = max(s, 1e-12)  # a dead channel (gamma = 0) would divide by zero
        cdf = 0.5 * (1.0 + math.erf((-m / s) / math.sqrt(2.0)))
        if cdf > 0.001:
            margins.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m)
        else:
            margins.append(-3 * s)
    return torch.tensor(margins, dtype=bn.weight.dtype, device=bn.weight.device)


@CONNECTORS.register(aliases=("OFDTeacher",))
class OFDTeacherConnector(nn.Module):
    """``forward(t) = max(t, margin)`` per channel (the teacher side of OFD; Heo et al., ICCV 2019).

    The margin is a buffer (saved in ``state_dict``); set it with :meth:`init_margin_from_bn` or
    :meth:`init_margin` before the first forward.

    Args:
        channels: Number of channels; may be left ``None`` and fixed by the first ``init_margin*``.

    Raises:
        RuntimeError: ``forward`` before the margin was initialised.

    Example:
        >>> import torch, torch.nn as nn
        >>> c = OFDTeacherConnector(2)
        >>> c.init_margin_from_bn(nn.BatchNorm2d(2))
        >>> c(torch.full((1, 2, 1, 1), -5.0)).flatten().tolist()[0] > -1
        True
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("margin", torch.zeros(1, channels or 0, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def init_margin(self, margin: torch.Tensor) -> None:
        """Set the per-channel margin from a ``(C,)`` tensor (in place)."""
        margin = margin.detach().reshape(1, -1, 1, 1)
        if self.channels is not None and margin.shape[1] != self.channels:
            raise ValueError(
                f"OFDTeacherConnector(channels={self.channels}): margin has {margin.shape[1]} channels; "
                "pass the BN layer of the distilled teacher feature."
            )
        self.channels = margin.shape[1]
        self.margin = margin.to(self.margin.device).clone()
        self.initialized.fill_(True)

    def init_margin_from_bn(self, bn: nn.BatchNorm2d) -> None:
        """Set the margin from the teacher's BatchNorm statistics (see :func:`margin_from_bn`)."""
        self.init_margin(margin_from_bn(bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``(N, C, H, W)`` teacher features from below at the margin."""
        if not bool(self.initialized):
            raise RuntimeError(
                "OFDTeacherConnector: margin is not initialised; call init_margin_from_bn(teacher_bn) "
                "first (OFDDistiller does this for you)."
            )
        if x.dim() < 2 or x.shape[1] != self.margin.shape[1]:
            raise ValueError(
                f"OFDTeacherConnector: input of shape {tuple(x.shape)} does not have "
                f"{self.margin.shape[1]} channels in dim 1."
            )
        margin = self.margin.to(dtype=x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
        return torch.maximum(x, margin)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A connector built with channels=None must still load a saved margin of any width.
        key = prefix + "margin"
        if key in state_dict and state_dict[key].shape != self.margin.shape and self.channels is None:
            self.margin = torch.empty_like(state_dict[key], device=self.margin.device)
            self.channels = state_dict[key].shape[1]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
