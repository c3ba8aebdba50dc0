"""BaseRecorder: the context-manager contract every recorder follows.

A recorder captures values during a forward pass without changing the model's code. It is attached
to a model once with :meth:`BaseRecorder.initialize` and records only inside ``with recorder:``;
entering clears :attr:`BaseRecorder.data_buffer`, every call of the source appends one record, and
leaving removes every hook or patch (also when the forward raises). Nothing is stored on the model
outside the context, so a model with initialized recorders can be deep-copied and pickled; copied or
pickled recorders start with an empty buffer.

Records of the previous context stay readable until the next enter, as before; what changes on
enter is only *when* their memory goes: each new record releases the oldest record of the previous
context (see :meth:`BaseRecorder._recorder_append`; records that need grad, which may hold a whole
autograd graph, still go at once on enter), so the allocator reuses memory it already holds
instead of returning it to the system and faulting it back in during the next forward. Call
:meth:`BaseRecorder.release` to drop the records as soon as they have been read.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from torchpare._context import NestedContext
from torchpare._utils import did_you_mean

__all__ = ["BaseRecorder", "RecordIndexError", "RecorderNotInitializedError", "normalize_data_idx"]

DataIdx = int | str | Sequence[int | str] | None


def normalize_data_idx(data_idx: Any) -> tuple[int | str, ...] | None:
    """``data_idx`` as a path of steps: ``None``; ``2`` -> ``(2,)``; ``"hidden_states.2"`` ->
    ``("hidden_states", 2)`` (dotted parts that are integers index sequences); a tuple/list of ints and
    strings is taken as the path itself.

    Raises:
        TypeError: not None, an int, a str, or a tuple/list of ints and strs (bools are refused).
        ValueError: an empty string or an empty step (``"a..b"``), or an empty tuple/list.

    Example:
        >>> normalize_data_idx("hidden_states.2"), normalize_data_idx(("hidden_states", -1)), normalize_data_idx(0)
        (('hidden_states', 2), ('hidden_states', -1), (0,))
    """
    if data_idx is None:
        return None
    if isinstance(data_idx, bool):
        raise TypeError(_DATA_IDX_HELP.format(data_idx))
    if isinstance(data_idx, int):
        return (data_idx,)
    if isinstance(data_idx, str):
        parts = data_idx.split(".")
        if not all(parts):
            raise ValueError(f"'data_idx' {data_idx!r} has an empty step; write e.g. 'hidden_states.2'.")
        return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)
    if isinstance(data_idx, tuple | list):
        if not data_idx:
            raise ValueError("'data_idx' is an empty path; use None for the whole record.")
        for step in data_idx:
            if isinstance(step, bool) or not isinstance(step, int | str) or step == "":
                raise TypeError(_DATA_IDX_HELP.format(data_idx))
        return tuple(data_idx)
    raise TypeError(_DATA_IDX_HELP.format(data_idx))


_DATA_IDX_HELP = (
    "'data_idx' must be None, an int (tuple element), a str (output field, or a dotted path such as "
    "'hidden_states.2') or a tuple/list path such as ('hidden_states', 2); got {!r}."
)


def _holds_graph(record: Any) -> bool:
    """Whether a record (a tensor, or a tuple/list/dict of them, one level deep) needs grad."""
    if isinstance(record, Tensor):
        return record.requires_grad
    if isinstance(record, tuple | list):
        return any(isinstance(v, Tensor) and v.requires_grad for v in record)
    if isinstance(record, Mapping):
        return any(isinstance(v, Tensor) and v.requires_grad for v in record.values())
    return False


# Tensor attribute holding a record's autograd version counter at the moment it was recorded.
RECORDED_VERSION = "_torchpare_recorded_version"


def tag_version(value: Any) -> Any:
    """Remember a tensor's version counter as it is recorded, so a later in-place change is detected."""
    if isinstance(value, Tensor):
        setattr(value, RECORDED_VERSION, value._version)
    return value


def _warn_if_modified_in_place(record: Any, recorder: BaseRecorder) -> None:
    """Warn (once per recorder) when a tagged tensor record was changed in place after it was recorded.

    The classic case: a ``BatchNorm2d`` followed by ``ReLU(inplace=True)`` (torchvision's ResNets). The
    hook records the BatchNorm output, and the ReLU then overwrites that same tensor, so a loss reading
    the record would get post-ReLU values without a word.
    """
    version = getattr(record, RECORDED_VERSION, None) if isinstance(record, Tensor) else None
    if version is None or record._version == version or recorder._warned_in_place:
        return
    recorder._warned_in_place = True
    warnings.warn(
        f"{recorder._who()}: the recorded tensor was modified in place after it was recorded (an in-place "
        "op after the source, such as ReLU(inplace=True)), so the record holds that op's result, not the "
        "source's output. Set inplace=False on the op that follows, or record the module after it.",
        UserWarning,
        stacklevel=3,
    )


class RecordIndexError(IndexError, ValueError):
    """``get_record_data`` asked for a record or an item that does not exist."""


class RecorderNotInitializedError(ValueError):
    """A recorder that needs a model was entered before ``initialize(model)``."""


class BaseRecorder(NestedContext, ABC):
    """Base class: source bookkeeping, the data buffer, re-entrant context management.

    Subclasses implement :meth:`_prepare` (check the source against the model), :meth:`_attach`
    (install hooks/patches writing to ``self._data_buffer``) and :meth:`_detach` (remove them).

    Args:
        source: What to record; its meaning depends on the subclass (a module name, an import path).

    Raises:
        TypeError: ``source`` is not a string.

    Entering a recorder that is already active only counts the nesting (no second hook, no clearing);
    the hooks go when the outermost context exits.
    """

    #: Whether :meth:`initialize` needs a model (module and parameter recorders).
    needs_model: bool = True
    _retiring: list[Any] = []  # only ever popped while non-empty; instances assign their own
    #: Why the recorder has no records on purpose (e.g. a manager told it is not needed); for the error.
    _idle_reason: str | None = None
    #: Whether the "record changed in place" warning was given (once per recorder).
    _warned_in_place: bool = False

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"{type(self).__name__}: source must be a str, got {type(source).__name__}.")
        self._source = source
        self._data_buffer: list[Any] = []
        # The previous context's records, newest first, popped one per new record (see _recorder_append).
        self._retiring: list[Any] = []
        self._idle_reason: str | None = None
        self._initialized = False
        self._ever_entered = False

    # -- properties ---------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """The recorded source as given to the constructor."""
        return self._source

    @property
    def data_buffer(self) -> list[Any]:
        """The records of the current (or last) context, one per call, in call order."""
        return self._data_buffer

    @property
    def initialized(self) -> bool:
        """Whether :meth:`initialize` has run."""
        return self._initialized

    def _who(self) -> str:
        return f"{type(self).__name__}(source={self._source!r})"

    def __repr__(self) -> str:
        return f"{self._who()[:-1]}, records={len(self._data_buffer)})"

    # -- lifecycle ----------------------------------------------------------------------------
    def initialize(self, model: Any = None) -> None:
        """Attach the recorder to ``model`` (checked now; hooks are installed only on enter).

        Args:
            model: The ``nn.Module`` to record from; ``None`` for function and method recorders.

        Raises:
            TypeError: a module/parameter recorder got no model or not an ``nn.Module``.
            AttributeError: the source does not exist (the message names the closest names).
            ValueError: called while the recorder is active.
        """
        if self._depth:
            raise ValueError(
                f"{self._who()}: initialize() called inside the recorder's context; call it before `with`."
            )
        self._prepare(model)
        self._initialized = True

    def reset_data_buffer(self) -> None:
        """Start a fresh, empty buffer (earlier buffer lists handed out stay untouched)."""
        self._data_buffer = []

    def release(self) -> None:
        """Drop the records now (e.g. once the losses have read them), so their memory can be reused.

        Outside the context the buffer becomes a new empty list (lists handed out earlier stay
        untouched); inside it the current buffer is emptied in place (the hooks keep appending to it).
        Records of the previous context not yet replaced are dropped too.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> from torchpare.record import ModuleOutputsRecorder
            >>> model = nn.Linear(2, 2)
            >>> recorder = ModuleOutputsRecorder("")
            >>> recorder.initialize(model)
            >>> with recorder:
            ...     _ = model(torch.ones(1, 2))
            >>> recorder.release()
            >>> len(recorder.data_buffer)
            0
        """
        if self._retiring:  # the class default is always empty, so only an instance's list is cleared
            self._retiring.clear()
        if self._depth:
            self._data_buffer.clear()
        else:
            self._data_buffer = []

    def _recorder_append(self) -> Any:
        """The function hooks call with each new record: appends to the current buffer and, while
        records of the previous context remain, drops the oldest of them (its memory is then reused
        by the allocation that follows, which keeps the forward from faulting in fresh pages).

        Bound once per enter, so the per-call cost is one append (and one pop while old records remain).
        """
        append = self._data_buffer.append
        retiring = self._retiring
        if not retiring:
            return append
        pop = retiring.pop

        def record(value: Any) -> None:
            append(value)
            if retiring:
                pop()

        return record

    def _open(self) -> None:
        if not self._initialized:
            if self.needs_model:
                raise RecorderNotInitializedError(
                    f"{self._who()}: call recorder.initialize(model) before `with recorder:` "
                    f"(RecorderManager.initialize(model) does it for all its recorders)."
                )
            self.initialize(None)
        # A copy, newest first: the old list object (maybe held by the caller) stays untouched.
        # Records that hold an autograd graph go now, as they may keep a whole graph's saved tensors.
        old = self._data_buffer
        self._retiring = [] if any(map(_holds_graph, old)) else old[::-1]
        self.reset_data_buffer()
        try:
            self._attach()
        except BaseException:
            self._retiring = []
            raise
        self._ever_entered = True

    def _close(self) -> None:
        self._retiring = []  # what this context did not replace goes now
        self._detach()

    # -- subclass hooks -----------------------------------------------------------------------
    @abstractmethod
    def _prepare(self, model: Any) -> None:
        """Check the source against ``model`` and remember what ``_attach`` needs."""

    @abstractmethod
    def _attach(self) -> None:
        """Install hooks or patches that append to ``self._data_buffer``."""

    @abstractmethod
    def _detach(self) -> None:
        """Remove everything ``_attach`` installed; must not raise."""

    # -- reading ------------------------------------------------------------------------------
    def get_record_data(self, record_idx: int = 0, data_idx: DataIdx = None) -> Any:
        """Return the record of the ``record_idx``-th call, or one item of it.

        Args:
            record_idx: Which call (0 = first; negative counts from the end). A module called twice
                in one forward has records 0 and 1.
            data_idx: Index into a tuple/list record (e.g. one of several outputs), or a key of a
                dict-like record (``"logits"`` of a Hugging Face ``ModelOutput``), or a path into
                nested outputs: ``"hidden_states.2"`` or ``("hidden_states", 2)`` (see
                :func:`normalize_data_idx`); ``None`` returns the whole record.

        Returns:
            The recorded value (tensors are the live ones: gradients flow through them).

        Raises:
            RecordIndexError: ``record_idx`` or ``data_idx`` is out of range, or a key is missing (the
                message says how many records or items exist, or lists the keys); with no records at
                all it suggests running the forward inside the context.
            TypeError: ``data_idx`` does not fit the record (an int for a non-sequence, a str for a
                non-dict).
        """
        buffer = self._data_buffer
        n = len(buffer)
        if not -n <= record_idx < n:
            if n == 0:
                hint = (
                    self._idle_reason
                    if self._idle_reason
                    else "the recorder was never entered: run the forward inside `with recorder:`"
                    if not self._ever_entered
                    else "the source was not called inside `with recorder:`; run the forward inside the "
                    "context (and check that the source is used by that forward)"
                )
                raise RecordIndexError(
                    f"{self._who()}: record_idx={record_idx} but there are no records; {hint}."
                )
            raise RecordIndexError(
                f"{self._who()}: record_idx={record_idx} is out of range; {n} record(s) exist "
                f"(the source ran {n} time(s) in the last context), valid indices 0..{n - 1}."
            )
        record = buffer[record_idx]
        _warn_if_modified_in_place(record, self)
        if data_idx is None:
            return record
        if isinstance(data_idx, str) and isinstance(record, Mapping) and data_idx in record:
            return record[data_idx]  # a key that itself contains dots
        path = normalize_data_idx(data_idx)
        value = self._index_record(record, record_idx, path[0])  # type: ignore[index]
        for depth in range(1, len(path)):  # type: ignore[arg-type]
            try:
                value = BaseRecorder._index_record(self, value, record_idx, path[depth])  # type: ignore[index]
            except (RecordIndexError, TypeError) as exc:
                raise type(exc)(f"data_idx={data_idx!r}, after {path[:depth]!r}: {exc}") from None  # type: ignore[index]
        return value

    def _index_record(self, record: Any, record_idx: int, data_idx: Any) -> Any:
        if (
            isinstance(data_idx, str)
            and not isinstance(record, Mapping)
            and hasattr(record, data_idx)
            and not callable(getattr(record, data_idx))
        ):
            return getattr(record, data_idx)  # dataclass / named tuple outputs
        if isinstance(data_idx, str) and isinstance(record, Mapping):  # dicts, HF ModelOutput
            if data_idx not in record:
                keys = [str(k) for k in record]
                raise RecordIndexError(
                    f"{self._who()}: record {record_idx} has no key {data_idx!r}"
                    f"{did_you_mean(data_idx, keys)}; keys: {keys}."
                )
            return record[data_idx]
        if not isinstance(record, (tuple, list)) or isinstance(data_idx, str):
            raise TypeError(
                f"{self._who()}: data_idx={data_idx!r} needs a tuple or list record (or a str key of a "
                f"dict record), but record {record_idx} is a {type(record).__name__}; use data_idx=None."
            )
        if not -len(record) <= data_idx < len(record):
            raise RecordIndexError(
                f"{self._who()}: data_idx={data_idx} is out of range for record {record_idx}, "
                f"which has {len(record)} item(s)."
            )
        return record[data_idx]

    # -- copying ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles start with an empty buffer too: records belong to one forward and are
        # often non-leaf tensors, which ``copy.deepcopy`` refuses.
        state = super().__getstate__()
        state["_data_buffer"] = []
        state["_retiring"] = []
        return state
