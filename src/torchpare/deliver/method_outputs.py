"""MethodOutputsDelivery: replay a method's teacher-side outputs to the student, for every instance."""

from __future__ import annotations

from torchpare.deliver.base import BaseDelivery
from torchpare.registry import DELIVERIES

__all__ = ["MethodOutputsDelivery"]


@DELIVERIES.register(aliases=("MethodOutputs",))
class MethodOutputsDelivery(BaseDelivery):
    """Deliver the outputs of the method at ``method_path`` from the teacher side to the student side.

    The method is patched on the class while the context is open, so every instance is affected
    (one queue for all of them), and none after exit; an inherited method is restored by deleting the
    override. With ``override_data = False`` the method runs and its output is queued; with
    ``override_data = True`` the oldest queued output is returned and the method is not called.

    Args:
        max_keep_data: Most outputs queued at once (>= 1).
        method_path: Import path of the method, ``"pkg.module.Class.method"``.

    Raises:
        TypeError: wrong argument types.
        ValueError: ``max_keep_data`` < 1.

    Example:
        >>> import random
        >>> delivery = MethodOutputsDelivery(max_keep_data=2, method_path="random.Random.random")
        >>> with delivery:
        ...     teacher = [random.Random().random() for _ in range(2)]
        ...     delivery.override_data = True
        ...     student = [random.Random().random() for _ in range(2)]
        >>> teacher == student
        True
    """

    _kind = "method"

    def __init__(self, max_keep_data: int, method_path: str) -> None:
        super().__init__(max_keep_data, method_path)

    @property
    def method_path(self) -> str:
        """Import path of the delivered method."""
        return self._path
