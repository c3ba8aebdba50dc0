"""FunctionOutputsDelivery: replay a module-level function's teacher-side outputs to the student."""

from __future__ import annotations

from torchpare.deliver.base import BaseDelivery
from torchpare.registry import DELIVERIES

__all__ = ["FunctionOutputsDelivery"]


@DELIVERIES.register(aliases=("FunctionOutputs",))
class FunctionOutputsDelivery(BaseDelivery):
    """Deliver the outputs of the function at ``func_path`` from the teacher side to the student side.

    While the context is open the function is patched on its module: with ``override_data = False``
    it runs and its output is queued; with ``override_data = True`` the oldest queued output is
    returned and the function is not called. Code that did ``from pkg.module import func`` before the
    context keeps the original and is not affected.

    Args:
        max_keep_data: Most outputs queued at once (>= 1).
        func_path: Import path of the function, ``"pkg.module.func"``.

    Raises:
        TypeError: wrong argument types.
        ValueError: ``max_keep_data`` < 1.

    Example:
        >>> import random
        >>> delivery = FunctionOutputsDelivery(max_keep_data=1, func_path="random.random")
        >>> with delivery:
        ...     teacher = random.random()
        ...     delivery.override_data = True
        ...     student = random.random()
        >>> teacher == student
        True
    """

    _kind = "function"

    def __init__(self, max_keep_data: int, func_path: str) -> None:
        super().__init__(max_keep_data, func_path)

    @property
    def func_path(self) -> str:
        """Import path of the delivered function."""
        return self._path
