"""The engine's data entry: a config's ``data`` section -> a :class:`DataBundle` (train / val / test).

Any ``DATASETS`` entry that returns a :class:`~torchpare.datasets.bundle.DataBundle` can be named in a
config; torchpare ships the reference ``digits`` (:mod:`torchpare.datasets.digits`) and readers of the user's
local files (:mod:`torchpare.datasets.files`: ``table``, ``image_folder``, ``sentences``, ``hf_files``,
``factory``; see docs/byo.md).

Example:
    >>> bundle = build_data({"type": "digits", "seed": 0, "label_fraction": 0.5})
    >>> type(bundle).__name__, len(bundle.test)
    ('DigitsData', 360)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torchpare.datasets  # noqa: F401  (registers the reference datasets that configs name)
from torchpare.datasets.bundle import DataBundle
from torchpare.registry import DATASETS

__all__ = ["DataBundle", "build_data", "DEFAULT_DATA"]

DEFAULT_DATA = {"type": "digits"}  # a config without a data section trains on the reference digits

# Old names of this module (the digits data moved to torchpare.datasets.digits): FutureWarning on use.
_MOVED = {"DigitsSplit", "load_digits_split", "digits_loaders"}


def build_data(cfg: Mapping[str, Any] | None, source: str = "<config>") -> DataBundle:
    """Build a config's ``data`` section (``{"type": "digits", "seed": 0, "label_fraction": 1.0}``).

    ``type`` names a ``DATASETS`` entry and the other keys are its arguments, except ``batch_size``
    (the ``schedule`` section sets it), which is ignored here.

    Args:
        cfg: The data section; ``None`` or empty means :data:`DEFAULT_DATA`.
        source: Where the config came from, for messages.

    Returns:
        The :class:`DataBundle` the entry returns.

    Raises:
        UnknownTypeError: ``type`` is not a registered dataset.
        BuildError: the arguments do not fit the entry.
        TypeError: the entry returned something other than a :class:`DataBundle`.
        ConfigError: a local file or folder that is missing, empty or unreadable, a missing column or
            tokenizer, a factory that cannot be imported (one line naming the key and the file).
    """
    from torchpare.datasets.factory import DataFileError, FactoryImportError
    from torchpare.engine.config import ConfigError

    cfg = dict(cfg or DEFAULT_DATA)
    cfg.pop("batch_size", None)
    try:
        bundle = DATASETS.build(cfg)
    except (DataFileError, FactoryImportError) as exc:
        raise ConfigError(source, [str(exc)]) from None
    if not isinstance(bundle, DataBundle):
        raise TypeError(
            f"data: DATASETS type {cfg.get('type')!r} returned a {type(bundle).__name__}, not a DataBundle; "
            f"register a function returning torchpare.datasets.DataBundle(train=..., val=..., test=..., "
            f"example=...)"
        )
    return bundle


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"torchpare.engine.data.{name} moved to torchpare.datasets.{name}; the old path goes in the next "
            f"release.", FutureWarning, stacklevel=2)
        from torchpare.datasets import digits

        return getattr(digits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
