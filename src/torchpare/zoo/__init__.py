"""Small reference models for tests, the demo and benchmarks (own CNNs/MLPs and HF configs).

Importing this package registers every model class and builder in :data:`torchpare.registry.MODELS`;
:data:`ZOO` maps short names (``"vgg"``, ``"resnet"``, ``"vit"``, ``"swin"``, ``"swinv2"``, ..., ``"hf_llama"``) to builders returning
``(model, example_inputs)``.

Example:
    >>> from torchpare.zoo import ZOO
    >>> model, x = ZOO["digits_mlp"]()
    >>> model(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from torchpare.zoo import catalog, cnn, digits, hf, shufflenet, swin, swinv2, vit

# Each submodule lists its public names once, in its own __all__; this package re-exports them.
from torchpare.zoo.catalog import *  # noqa: F403
from torchpare.zoo.cnn import *  # noqa: F403
from torchpare.zoo.digits import *  # noqa: F403
from torchpare.zoo.hf import *  # noqa: F403
from torchpare.zoo.shufflenet import *  # noqa: F403
from torchpare.zoo.swin import *  # noqa: F403
from torchpare.zoo.swinv2 import *  # noqa: F403
from torchpare.zoo.vit import *  # noqa: F403

__all__ = [
    *catalog.__all__,
    *digits.__all__,
    *cnn.__all__,
    *hf.__all__,
    *vit.__all__,
    *swin.__all__,
    *swinv2.__all__,
    *shufflenet.__all__,
]
