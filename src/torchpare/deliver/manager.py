"""DeliveryManager: named deliveries switched between teacher and student side together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchpare._context import ContextGroup, UnknownNameError
from torchpare.deliver.base import BaseDelivery, DeliveryQueueLeftoverError
from torchpare.registry import DELIVERIES

__all__ = ["DeliveryManager", "DistillDeliveryManager", "UnknownDeliveryError", "named_deliveries"]


class UnknownDeliveryError(UnknownNameError):
    """``get_delivery`` was asked for a name the manager does not have (a ``KeyError``)."""


def named_deliveries(deliveries: Any) -> Any:
    """The list form ``[cfg, ...]`` as ``{name: cfg}`` (``cfg["name"]`` or the position); mappings as given.

    Example:
        >>> named_deliveries([{"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "random.random"},
        ...                   {"name": "perm", "type": "FunctionOutputs", "max_keep_data": 1,
        ...                    "func_path": "torch.randperm"}]).keys()
        dict_keys(['0', 'perm'])
    """
    if deliveries is None:
        return {}
    if not isinstance(deliveries, list | tuple):
        return deliveries
    out: dict[str, Any] = {}
    for i, item in enumerate(deliveries):
        name = str(i)
        if isinstance(item, Mapping) and "name" in item:
            item = dict(item)
            name = item.pop("name")
            if not isinstance(name, str):
                raise TypeError(f"DeliveryManager: deliveries[{i}]['name'] must be a str, got {name!r}.")
        if name in out:
            raise ValueError(f"DeliveryManager: deliveries[{i}]: the name {name!r} is used twice.")
        out[name] = item
    return out


class DeliveryManager(ContextGroup[BaseDelivery]):
    """Hold deliveries by name; ``override_data`` and ``with manager:`` apply to all of them.

    ``DistillDeliveryManager`` (the name MMRazor uses) is the same class.

    Args:
        deliveries: ``name -> delivery`` where each value is a :class:`BaseDelivery` or a config dict
            built through the ``DELIVERIES`` registry
            (``{"type": "FunctionOutputs", "max_keep_data": 1, "func_path": "pkg.mod.func"}``); or, as
            MMRazor's configs write it, a list of such values: a dict's optional ``"name"`` key names
            it, otherwise its position does (``"0"``, ``"1"``, ...).

    Raises:
        TypeError: a name is not a string, or a value is neither a delivery nor a config dict.
        ValueError: two list items with the same ``"name"``.
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

    def __init__(
        self,
        deliveries: Mapping[str, BaseDelivery | Mapping[str, Any]]
        | Sequence[BaseDelivery | Mapping[str, Any]]
        | None = None,
    ) -> None:
        super().__init__(named_deliveries(deliveries))
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

    def check_consumed(self) -> None:
        """Raise if a queue still holds outputs after the student side ran; the queues are emptied.

        Raises:
            DeliveryQueueLeftoverError: (a ValueError) names each delivery with outputs left and how many.
        """
        left = {name: len(d) for name, d in self._items.items() if len(d)}
        if not left:
            return
        self.clear()
        detail = ", ".join(
            f"{name!r} ({self._items[name].path}: {n} output(s))" for name, n in left.items()
        )
        raise DeliveryQueueLeftoverError(
            f"{type(self).__name__}: after the student's forward, delivery {detail} still held teacher "
            f"outputs; the student called it fewer times than the teacher did, so they would reach the "
            f"next step. Make both forwards call it equally often (the queues are now emptied)."
        )


#: MMRazor's name of :class:`DeliveryManager` (the same class).
DistillDeliveryManager = DeliveryManager
