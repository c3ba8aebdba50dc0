"""DeliveryManager: named deliveries switched between teacher and student side together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchpare._context import ContextGroup, UnknownNameError
from torchpare.deliver.base import BaseDelivery
from torchpare.registry import DELIVERIES

__all__ = ["DeliveryManager", "UnknownDeliveryError"]


class UnknownDeliveryError(UnknownNameError):
    """``get_delivery`` was asked for a name the manager does not have (a ``KeyError``)."""


class DeliveryManager(ContextGroup[BaseDelivery]):
    """Hold deliveries by name; ``override_data`` and ``with manager:`` apply to all of them.

    Args:
        deliveries: ``name -> delivery`` where each value is a :class:`BaseDelivery` or a config dict
            built through the ``DELIVERIES`` registry
            (``{"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "pkg.mod.func"}``).

    Raises:
        TypeError: a name is not a string, or a value is neither a delivery nor a config dict.
        torchpare.registry.UnknownTypeError: a config names an unknown delivery type.
        torchpare.registry.BuildError: a config's arguments do not fit the delivery.

    Example:
        >>> import random
        >>> manager = DeliveryManager(
        ...     {"rand": {"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.random"}}
        ... )
        >>> with manager:
        ...     manager.override_data = False
        ...     teacher = random.random()
        ...     manager.override_data = True
        ...     student = random.random()
        >>> teacher == student
        True
    """

    _item_type = BaseDelivery
    _registry = DELIVERIES
    _noun = ("delivery", "deliveries")
    _config_example = "{'type': 'FunctionOutputs', 'max_keep_data': 1, 'func_path': 'pkg.mod.func'}"
    _unknown_error = UnknownDeliveryError

    def __init__(self, deliveries: Mapping[str, BaseDelivery | Mapping[str, Any]]) -> None:
        super().__init__(deliveries)
        self._override_data = False

    @property
    def deliveries(self) -> dict[str, BaseDelivery]:
        """The deliveries by name (a copy; changing it does not change the manager)."""
        return dict(self._items)

    @property
    def override_data(self) -> bool:
        """The side of every delivery: ``False`` teacher (record), ``True`` student (replay).

        Raises:
            ValueError: (getter) the deliveries were switched one by one and now disagree.
            TypeError: (setter) the value is not a bool.
        """
        values = {d.override_data for d in self._items.values()}
        if len(values) > 1:
            sides = {name: d.override_data for name, d in self._items.items()}
            raise ValueError(
                f"DeliveryManager: the deliveries disagree on override_data ({sides}); "
                f"set manager.override_data to switch them together."
            )
        return values.pop() if values else self._override_data

    @override_data.setter
    def override_data(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"DeliveryManager: override_data must be True or False, got {value!r}.")
        self._override_data = value
        for delivery in self._items.values():
            delivery.override_data = value

    def get_delivery(self, name: str) -> BaseDelivery:
        """Return the delivery registered under ``name``.

        Raises:
            UnknownDeliveryError: (a ``KeyError``) ``name`` is unknown; the message lists the known names.
        """
        return self._get(name)

    def clear(self) -> None:
        """Empty every delivery's queue."""
        for delivery in self._items.values():
            delivery.clear()
