"""Deprecated module path: the label state lives in :mod:`torchpare.prune.labels`.

Importing this module emits a ``FutureWarning``; it will be removed.
"""

import warnings

from torchpare.prune.labels import (
    NEUTRAL,
    LabelContext,
    SliceInfo,
    UnionFind,
    distinct,
    varies_along,
    varying_dims,
)

warnings.warn(
    "torchpare.prune.graph.propagation is renamed torchpare.prune.labels; "
    "import LabelContext from there.",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["LabelContext", "UnionFind", "SliceInfo", "NEUTRAL", "distinct", "varies_along", "varying_dims"]
