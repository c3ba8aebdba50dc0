"""Small reference models for tests, the demo and benchmarks (own CNNs/MLPs and HF configs).

Importing this package registers every model class and builder in :data:`torchpare.registry.MODELS`;
:data:`ZOO` maps short names (``"vgg"``, ``"resnet"``, ..., ``"hf_llama"``) to builders returning
``(model, example_inputs)``.

Example:
    >>> from torchpare.zoo import ZOO
    >>> model, x = ZOO["digits_mlp"]()
    >>> model(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from torchpare.zoo.catalog import HF_MODELS, ZOO, build_zoo_model
from torchpare.zoo.cnn import (
    Bottleneck,
    DenseNetConcat,
    GroupedConvNet,
    InvertedResidual,
    MLPNet,
    MobileNetV2Like,
    ResNetBottleneck,
    SharedConvNet,
    VGGNet,
)
from torchpare.zoo.digits import DigitsCNN, DigitsMLP, DigitsSmallCNN, conv_bn_relu
from torchpare.zoo.hf import (
    hf_bert,
    hf_convnext,
    hf_gpt2,
    hf_llama,
    hf_mobilenetv2,
    hf_resnet,
    hf_vit,
)

__all__ = [
    "ZOO",
    "HF_MODELS",
    "build_zoo_model",
    "DigitsCNN",
    "DigitsSmallCNN",
    "DigitsMLP",
    "conv_bn_relu",
    "VGGNet",
    "ResNetBottleneck",
    "Bottleneck",
    "DenseNetConcat",
    "MobileNetV2Like",
    "InvertedResidual",
    "SharedConvNet",
    "GroupedConvNet",
    "MLPNet",
    "hf_resnet",
    "hf_convnext",
    "hf_mobilenetv2",
    "hf_vit",
    "hf_bert",
    "hf_gpt2",
    "hf_llama",
]
