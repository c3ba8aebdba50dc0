"""Factor-transfer connectors (Kim et al., NeurIPS 2018): the teacher's paraphraser, the student's translator."""

from __future__ import annotations

import torch
import torch.nn as nn

from torchpare.registry import CONNECTORS

__all__ = ["FTConnector"]

_ROLES = ("translator", "paraphraser")
_PHASES = ("train", "pretrain")


def _block(conv: nn.Module, channels: int, use_bn: bool) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels) if use_bn else nn.Identity(), nn.LeakyReLU(0.1)]


@CONNECTORS.register(aliases=("FT",))
class FTConnector(nn.Module):
    """Three 3x3 conv blocks (conv, optional BN, LeakyReLU(0.1)) encoding a feature map into "factors".

    Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer" (NeurIPS 2018).
    The *paraphraser* (teacher side) is an auto-encoder: pre-train it with ``phase="pretrain"``
    (``forward`` returns the reconstruction ``decoder(encoder(x))`` for an MSE against ``x``), then use
    ``phase="train"`` (``forward`` returns the factor ``encoder(x)``). The *translator* (student side)
    is the encoder alone. Factors are compared by :class:`~torchpare.distill.losses.FTLoss`.

    Args:
        in_channels: Channels of the input feature map.
        out_channels: Factor channels (the paper uses ``k * in_channels``, rate ``k = 0.5``).
        role: ``"translator"`` (default) or ``"paraphraser"`` (adds the decoder).
        use_bn: BatchNorm after each conv (the authors use it in the translator, not the paraphraser).
        phase: ``"train"`` or ``"pretrain"`` (paraphraser only); may be changed later by assignment.

    Raises:
        ValueError: unknown ``role`` or ``phase``.

    Example:
        >>> import torch
        >>> FTConnector(8, 4)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
        >>> FTConnector(8, 4, role="paraphraser", phase="pretrain")(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        role: str = "translator",
        use_bn: bool = True,
        phase: str = "train",
    ) -> None:
        super().__init__()
        if role not in _ROLES:
            raise ValueError(f"FTConnector: role must be one of {_ROLES}, got {role!r}.")
        if phase not in _PHASES:
            raise ValueError(f"FTConnector: phase must be one of {_PHASES}, got {phase!r}.")
        if role == "translator" and phase == "pretrain":
            raise ValueError(
                "FTConnector: phase='pretrain' needs role='paraphraser' (only it has a decoder)."
            )
        self.role = role
        self.phase = phase
        c_in, c_out = in_channels, out_channels
        self.encoder = nn.Sequential(
            *_block(nn.Conv2d(c_in, c_in, 3, 1, 1), c_in, use_bn),
            *_block(nn.Conv2d(c_in, c_out, 3, 1, 1), c_out, use_bn),
            *_block(nn.Conv2d(c_out, c_out, 3, 1, 1), c_out, use_bn),
        )
        self.decoder: nn.Module | None = None
        if role == "paraphraser":
            self.decoder = nn.Sequential(
                *_block(nn.ConvTranspose2d(c_out, c_out, 3, 1, 1), c_out, use_bn),
                *_block(nn.ConvTranspose2d(c_out, c_in, 3, 1, 1), c_in, use_bn),
                *_block(nn.ConvTranspose2d(c_in, c_in, 3, 1, 1), c_in, use_bn),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The factor ``encoder(x)``, or the reconstruction in the paraphraser's ``"pretrain"`` phase."""
        factor = self.encoder(x)
        if self.phase == "pretrain":
            if self.decoder is None:
                raise ValueError("FTConnector: phase='pretrain' needs role='paraphraser'.")
            return self.decoder(factor)
        return factor
