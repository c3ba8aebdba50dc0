"""Deliveries: replay a function's or method's teacher-side outputs on the student side.

Every delivery is registered in :data:`torchpare.registry.DELIVERIES` under its class name and a
short alias (``"FunctionOutputs"`` == ``"FunctionOutputsDelivery"``).
"""

from torchpare.deliver.base import (
    BaseDelivery,
    DeliveryQueueEmptyError,
    DeliveryQueueError,
    DeliveryQueueFullError,
    DeliveryQueueLeftoverError,
)
from torchpare.deliver.function_outputs import FunctionOutputsDelivery
from torchpare.deliver.manager import DeliveryManager, DistillDeliveryManager, UnknownDeliveryError
from torchpare.deliver.method_outputs import MethodOutputsDelivery

__all__ = [
    "BaseDelivery",
    "DeliveryManager",
    "DeliveryQueueEmptyError",
    "DeliveryQueueError",
    "DeliveryQueueFullError",
    "DeliveryQueueLeftoverError",
    "DistillDeliveryManager",
    "FunctionOutputsDelivery",
    "MethodOutputsDelivery",
    "UnknownDeliveryError",
]
