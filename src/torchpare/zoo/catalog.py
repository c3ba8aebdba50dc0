"""``ZOO``: every zoo model by a short name, as a builder returning ``(model, example_inputs)``.

Own models take a tensor input (``(2, 3, 16, 16)`` images, ``(2, 1, 8, 8)`` digits, ``(2, 32)``
features for the MLP); Hugging Face models take a dict of keyword arguments. Example inputs come from a
private generator, so they do not depend on (or advance) the global RNG; weights use the global RNG,
so ``torch.manual_seed(s)`` before a builder makes it deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.zoo import cnn, digits, hf, shufflenet, swin, swinv2, vit

__all__ = ["ZOO", "HF_MODELS", "build_zoo_model"]

Builder = Callable[[], tuple[nn.Module, Any]]


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _own(factory: Callable[[], nn.Module], *shape: int) -> Builder:
    def build() -> tuple[nn.Module, Any]:
        return factory().eval(), _randn(*shape)

    build.__doc__ = f"``({factory.__name__}(), randn{shape})`` in eval mode."
    return build


def _digits(factory: Callable[[], nn.Module]) -> Builder:
    def build() -> tuple[nn.Module, Any]:
        return factory().eval(), torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))

    build.__doc__ = f"``({factory.__name__}(), rand(2, 1, 8, 8))`` in eval mode."
    return build


ZOO: dict[str, Builder] = {
    "digits_cnn": _digits(digits.DigitsCNN),
    "digits_small_cnn": _digits(digits.DigitsSmallCNN),
    "digits_mlp": _digits(digits.DigitsMLP),
    "vgg": _own(cnn.VGGNet, 2, 3, 16, 16),
    "resnet": _own(cnn.ResNetBottleneck, 2, 3, 16, 16),
    "densenet": _own(cnn.DenseNetConcat, 2, 3, 16, 16),
    "mobilenetv2": _own(cnn.MobileNetV2Like, 2, 3, 16, 16),
    "shared_conv": _own(cnn.SharedConvNet, 2, 3, 16, 16),
    "grouped_conv": _own(cnn.GroupedConvNet, 2, 3, 16, 16),
    "mlp": _own(cnn.MLPNet, 2, 32),
    "vit": _own(vit.ViT, 2, 3, 16, 16),
    "swin": _own(swin.SwinLike, 2, 3, 16, 16),
    "shufflenetv2": _own(shufflenet.ShuffleNetV2Like, 2, 3, 16, 16),
    "swinv2": _own(swinv2.SwinV2Like, 2, 3, 32, 32),
    "hf_resnet": hf.hf_resnet,
    "hf_convnext": hf.hf_convnext,
    "hf_mobilenetv2": hf.hf_mobilenetv2,
    "hf_vit": hf.hf_vit,
    "hf_bert": hf.hf_bert,
    "hf_gpt2": hf.hf_gpt2,
    "hf_llama": hf.hf_llama,
}
"""Name -> builder returning ``(model, example_inputs)``; models are in eval mode."""

HF_MODELS: tuple[str, ...] = tuple(name for name in ZOO if name.startswith("hf_"))
"""Names of the ``ZOO`` entries that need ``transformers``."""


def build_zoo_model(name: str) -> tuple[nn.Module, Any]:
    """Build ``ZOO[name]``.

    Args:
        name: A key of :data:`ZOO`.

    Returns:
        ``(model, example_inputs)``; call ``model(inputs)`` for a tensor, ``model(**inputs)`` for a dict.

    Raises:
        KeyError: unknown name; the message lists close names and all names.

    Example:
        >>> model, x = build_zoo_model("vgg")
        >>> model(x).shape
        torch.Size([2, 10])
    """
    if name not in ZOO:
        raise KeyError(
            f"build_zoo_model(): no zoo model {name!r}{did_you_mean(name, ZOO)}. Known: {', '.join(ZOO)}."
        )
    return ZOO[name]()
