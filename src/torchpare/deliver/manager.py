"""DeliveryManager: named deliveries switched between teacher and student side together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

from torchpare._utils import did_you_mean
from torchpare.deliver.base import BaseDelivery
from torchpare.registry import DELIVERIES

__all__ = ["DeliveryManager", "UnknownDeliveryError"]


class UnknownDeliveryError(KeyError):
    """``get_delivery`` was asked for a name the manager does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class DeliveryManager:
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

    def __init__(self, deliveries: Mapping[str, BaseDelivery | Mapping[str, Any]]) -> None:
        if not isinstance(deliveries, Mapping):
            raise TypeError(
                f"DeliveryManager: deliveries must be a dict name -> delivery or config, "
                f"got {type(deliveries).__name__}."
            )
        self._deliveries: dict[str, BaseDelivery] = {}
        for name, cfg in deliveries.items():
            if not isinstance(name, str):
                raise TypeError(f"DeliveryManager: delivery names must be strings, got {name!r}.")
            delivery = DELIVERIES.build(cfg) if isinstance(cfg, Mapping) else cfg
            if not isinstance(delivery, BaseDelivery):
                raise TypeError(
                    f"DeliveryManager: delivery {name!r} must be a BaseDelivery or a config dict like "
                    f"{{'type': 'FunctionOutputs', 'max_keep_data': 1, 'func_path': 'pkg.mod.func'}}, "
                    f"got {type(delivery).__name__}."
                )
            self._deliveries[name] = delivery
        self._override_data = False
        self._stacks: list[ExitStack] = []

    @property
    def deliveries(self) -> dict[str, BaseDelivery]:
        """The deliveries by name (a copy; changing it does not change the manager)."""
        return dict(self._deliveries)

    @property
    def override_data(self) -> bool:
        """The side of every delivery: ``False`` teacher (record), ``True`` student (replay).

        Raises:
            ValueError: (getter) the deliveries were switched one by one and now disagree.
            TypeError: (setter) the value is not a bool.
        """
        values = {d.override_data for d in self._deliveries.values()}
        if len(values) > 1:
            sides = {name: d.override_data for name, d in self._deliveries.items()}
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
        for delivery in self._deliveries.values():
            delivery.override_data = value

    def get_delivery(self, name: str) -> BaseDelivery:
        """Return the delivery registered under ``name``.

        Raises:
            UnknownDeliveryError: (a ``KeyError``) ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._deliveries[name]
        except KeyError:
            known = list(self._deliveries)
            raise UnknownDeliveryError(
                f"DeliveryManager: no delivery named {name!r}{did_you_mean(name, known)}. "
                f"Known deliveries: {', '.join(map(repr, known)) or '(none)'}."
            ) from None

    def clear(self) -> None:
        """Empty every delivery's queue."""
        for delivery in self._deliveries.values():
            delivery.clear()

    def __iter__(self) -> Iterator[tuple[str, BaseDelivery]]:
        return iter(self._deliveries.items())

    def __len__(self) -> int:
        return len(self._deliveries)

    def __contains__(self, name: object) -> bool:
        return name in self._deliveries

    def __repr__(self) -> str:
        return f"DeliveryManager({self._deliveries!r})"

    def __enter__(self) -> DeliveryManager:
        stack = ExitStack()
        try:
            for delivery in self._deliveries.values():
                stack.enter_context(delivery)
        except BaseException:
            stack.close()  # undo the deliveries already entered
            raise
        self._stacks.append(stack)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._stacks:
            self._stacks.pop().__exit__(exc_type, exc, tb)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stacks"] = []
        return state
