"""Shared machinery of the function and method recorders: patch on enter, restore on exit."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torchpare._patch import PathPatching, resolve_target
from torchpare._utils import did_you_mean
from torchpare.record.base import BaseRecorder, RecordIndexError

__all__ = ["CallableRecorder", "CallableOutputsRecorder", "CallableInputsRecorder"]


class CallableRecorder(BaseRecorder, PathPatching):
    """A recorder whose source is an import path; the callable is patched only inside the context.

    The patch replaces the attribute on its owner (module or class), so code that imported the
    callable directly before the context (``from pkg.mod import func``) is not seen.
    """

    needs_model = False
    #: Recorders wrap deliveries on the same callable, so they record what the caller receives.
    patch_layer = 1
    _transient = ("_target", "_patch", "_append")

    def _import_path(self) -> str:
        return self._source

    def _prepare(self, model: Any) -> None:
        # ``model`` is not needed: the callable is found by its import path.
        self._target = resolve_target(self._source, self._kind, self._who())

    def _attach(self) -> None:
        self._append = self._recorder_append()
        self._install_patch()

    def _detach(self) -> None:
        self._remove_patch()


class CallableOutputsRecorder(CallableRecorder):
    """Append the return value of every call."""

    def intercept(self, call_next: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call through and record the output."""
        out = call_next(*args, **kwargs)
        self._append(out)
        return out


class CallableInputsRecorder(CallableRecorder):
    """Append the arguments of every call, bound to the signature (defaults applied).

    A record is the tuple of argument values in signature order (``*args`` as a tuple, ``**kwargs``
    as a dict), without ``self``/``cls`` for methods; :attr:`arg_names` names its items and
    ``get_record_data(data_idx="name")`` selects one by name.
    """

    _transient = (*CallableRecorder._transient, "_signature")

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._signature: inspect.Signature | None = None

    def _attach(self) -> None:
        super()._attach()
        try:
            self._signature = inspect.signature(self._resolved().func)
        except (TypeError, ValueError):  # some builtins have none: record positional + keyword values
            self._signature = None

    @property
    def arg_names(self) -> list[str] | None:
        """Names of a record's items (``None`` when the callable has no introspectable signature)."""
        target = self._resolved()
        try:
            names = list(inspect.signature(target.func).parameters)
        except (TypeError, ValueError):
            return None
        return names[1:] if target.passes_receiver else names

    def intercept(self, call_next: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record the bound arguments, then call through."""
        skip = 1 if self._target is not None and self._target.passes_receiver else 0
        sig = self._signature
        if sig is None:
            self._append((*args[skip:], *kwargs.values()))
            return call_next(*args, **kwargs)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:  # the real call raises the proper error; nothing to record
            return call_next(*args, **kwargs)
        bound.apply_defaults()
        values = tuple(bound.arguments.values())
        self._append(values[skip:] if skip else values)
        return call_next(*args, **kwargs)

    def _index_record(self, record: Any, record_idx: int, data_idx: Any) -> Any:
        if isinstance(data_idx, str):
            names = self.arg_names or []
            if data_idx not in names:
                raise RecordIndexError(
                    f"{self._who()}: no argument {data_idx!r}{did_you_mean(data_idx, names)}; "
                    f"arguments are {names}."
                )
            data_idx = names.index(data_idx)
        return super()._index_record(record, record_idx, data_idx)
