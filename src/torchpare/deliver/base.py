"""BaseDelivery: a bounded FIFO of a callable's outputs, filled on the teacher side, replayed on the student's.

Inside ``with delivery:`` the callable is patched. With ``override_data = False`` (teacher side) the
real callable runs and its output is pushed onto a queue of at most ``max_keep_data`` items; with
``override_data = True`` (student side) the real callable is not called and the oldest queued output
is returned instead. The queue survives the context, so teacher and student may use separate
``with`` blocks; a full queue (push) or an empty one (pop) raises an error naming the path and why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from torchpare._context import NestedContext
from torchpare._patch import PathPatching

__all__ = [
    "BaseDelivery",
    "DeliveryQueueError",
    "DeliveryQueueFullError",
    "DeliveryQueueEmptyError",
    "DeliveryQueueLeftoverError",
]


class DeliveryQueueError(ValueError):
    """A delivery's queue was pushed when full or popped when empty."""


class DeliveryQueueFullError(DeliveryQueueError):
    """The teacher side produced more outputs than ``max_keep_data`` before the student consumed them."""


class DeliveryQueueEmptyError(DeliveryQueueError):
    """The student side asked for an output the teacher side has not produced."""


class DeliveryQueueLeftoverError(DeliveryQueueError):
    """After the student's forward a queue still held teacher outputs (they would leak into the next step)."""


class BaseDelivery(NestedContext, PathPatching):
    """Bounded FIFO plus the patch that fills it or replays from it (see the module docstring).

    Args:
        max_keep_data: Most outputs kept at once (>= 1): the number of calls of the teacher side
            before the student side consumes them.
        path: Import path of the callable; its meaning depends on the subclass.

    Raises:
        TypeError: ``max_keep_data`` is not an int or ``path`` is not a string.
        ValueError: ``max_keep_data`` < 1.

    Entering an already open delivery only counts the nesting; the patch goes with the outermost exit.
    """

    _transient = ("_target", "_patch")  # a module object and a live patch do not copy

    def __init__(self, max_keep_data: int, path: str) -> None:
        name = type(self).__name__
        if isinstance(max_keep_data, bool) or not isinstance(max_keep_data, int):
            raise TypeError(f"{name}: max_keep_data must be an int, got {type(max_keep_data).__name__}.")
        if max_keep_data < 1:
            raise ValueError(f"{name}(path={path!r}): max_keep_data must be >= 1, got {max_keep_data}.")
        if not isinstance(path, str):
            raise TypeError(
                f"{name}: the path must be a str like 'pkg.module.func', got {type(path).__name__}."
            )
        self._max_keep_data = max_keep_data
        self._path = path
        self._queue: deque[Any] = deque()
        self._override_data = False

    # -- properties ---------------------------------------------------------------------------
    @property
    def max_keep_data(self) -> int:
        """Capacity of the queue."""
        return self._max_keep_data

    @property
    def path(self) -> str:
        """Import path of the patched callable."""
        return self._path

    @property
    def data_queue(self) -> deque[Any]:
        """The queued outputs, oldest first."""
        return self._queue

    @property
    def override_data(self) -> bool:
        """``False``: run the real callable and queue its output (teacher); ``True``: replay (student)."""
        return self._override_data

    @override_data.setter
    def override_data(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{self._who()}: override_data must be True or False, got {value!r}.")
        self._override_data = value

    def _who(self) -> str:
        return f"{type(self).__name__}({self._path!r})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_keep_data={self._max_keep_data}, path={self._path!r}, "
            f"override_data={self._override_data}, queued={len(self._queue)})"
        )

    def __len__(self) -> int:
        return len(self._queue)

    # -- the FIFO -----------------------------------------------------------------------------
    def push(self, data: Any) -> None:
        """Append ``data`` to the queue.

        Raises:
            DeliveryQueueFullError: the queue already holds ``max_keep_data`` items.
        """
        self._check_not_full()
        self._queue.append(data)

    def pop(self) -> Any:
        """Remove and return the oldest queued item.

        Raises:
            DeliveryQueueEmptyError: the queue is empty.
        """
        if not self._queue:
            raise DeliveryQueueEmptyError(
                f"{self._who()}: no queued output of {self._path!r} to deliver (the queue is empty). The "
                f"student side (override_data=True) called it before the teacher side "
                f"(override_data=False), or more times than the teacher did; run the teacher's forward "
                f"first with the same delivery."
            )
        return self._queue.popleft()

    def clear(self) -> None:
        """Drop every queued item (e.g. after a failed step left teacher outputs unconsumed)."""
        self._queue.clear()

    def _check_not_full(self) -> None:
        if len(self._queue) >= self._max_keep_data:
            raise DeliveryQueueFullError(
                f"{self._who()}: cannot queue another output of {self._path!r}: it already holds "
                f"max_keep_data={self._max_keep_data}. The teacher side (override_data=False) called it "
                f"more times than max_keep_data before the student side consumed the outputs; raise "
                f"max_keep_data or run the student (override_data=True) in between."
            )

    # -- patching -----------------------------------------------------------------------------
    def check_path(self) -> None:
        """Import the path now (nothing is patched), so a typo fails when the distiller is built.

        Raises:
            ImportError: no module prefix of the path imports.
            AttributeError: an attribute on the way is missing (the message names the closest names).
            ValueError: the path is not an import path, or a method path does not name a method of a class.
        """
        self._resolved()

    def intercept(self, call_next: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one patched call: replay (student) or call through and queue (teacher)."""
        if self._override_data:
            return self.pop()
        self._check_not_full()  # before calling, so a failing push does not consume randomness
        out = call_next(*args, **kwargs)
        self._queue.append(out)
        return out

    def _import_path(self) -> str:
        return self._path

    def _open(self) -> None:
        self._install_patch()

    def _close(self) -> None:
        self._remove_patch()
