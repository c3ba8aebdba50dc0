"""Reference data: the :class:`DataBundle` every dataset fills, and scikit-learn's digits.

Importing this package registers its datasets in :data:`torchpare.registry.DATASETS` (``digits``), so a
config's ``data: {type: digits, seed: 0, label_fraction: 0.1}`` builds a bundle. Like the zoo, it
stands on the registry alone: the engine, the demos, tests and benchmarks use it.

Example:
    >>> from torchpare.datasets import digits_data
    >>> bundle = digits_data(seed=0, label_fraction=0.1)
    >>> len(bundle.train), len(bundle.test), tuple(bundle.example.shape)
    (1078, 360, (1, 1, 8, 8))
"""

from __future__ import annotations

from torchpare.datasets import bundle, digits, factory, files
from torchpare.datasets.bundle import *  # noqa: F403
from torchpare.datasets.digits import *  # noqa: F403
from torchpare.datasets.factory import *  # noqa: F403
from torchpare.datasets.files import *  # noqa: F403

__all__ = [*bundle.__all__, *digits.__all__, *factory.__all__, *files.__all__]
