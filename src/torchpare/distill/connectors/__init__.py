"""Connectors: small trainable (or fixed) modules mapping student/teacher features before a loss.

Each is a plain ``nn.Module`` (``forward()`` only), registered in ``CONNECTORS``, trained and saved with
the student. See ``docs/losses.md`` for the table.
"""

from torchpare.distill.connectors.ab import ABConnector
from torchpare.distill.connectors.conv_module import ConvModuleConnector
from torchpare.distill.connectors.ft import FTConnector
from torchpare.distill.connectors.linear import LinearConnector
from torchpare.distill.connectors.ofd_teacher import OFDTeacherConnector, margin_from_bn
from torchpare.distill.connectors.torch_functional import TorchFunctionalConnector
from torchpare.distill.connectors.torch_nn import TorchNNConnector

__all__ = [
    "ABConnector",
    "ConvModuleConnector",
    "FTConnector",
    "LinearConnector",
    "OFDTeacherConnector",
    "TorchFunctionalConnector",
    "TorchNNConnector",
    "margin_from_bn",
]
