"""The short Python API: ``Mapping(student, teacher).add(...)`` and the ``distill(...)`` context.

For users who write their own training loop. A :class:`Mapping` pairs student modules with teacher
modules (by module object or dotted name) and attaches any payload (a weight, a loss, a dict);
:func:`distill` hooks the mapped modules for the duration of a ``with`` block and, per call, runs the
teacher and the student on the same inputs and yields ``(student_output, teacher_output, payload)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.model_io import call_model
from torchpare.record import ModuleOutputsRecorder, RecorderManager

__all__ = ["Mapping", "MappingEntry", "DistillModel", "distill"]


class MappingEntry(NamedTuple):
    """One pair of a :class:`Mapping`: dotted module names on each side and the payload."""

    student: str
    teacher: str
    payload: Any


def _resolve(model: nn.Module, module: nn.Module | str, side: str, other: nn.Module, who: str) -> str:
    """Dotted name of ``module`` (a module object or a name) inside ``model``; errors name it."""
    if isinstance(module, str):
        names = dict(model.named_modules(remove_duplicate=False))
        if module not in names:
            hint = ""
            if module in dict(other.named_modules()):
                hint = f" It is a module of the {'teacher' if side == 'student' else 'student'}: swapped arguments?"
            raise KeyError(
                f"{who}: no {side} module {module!r} in {type(model).__name__}"
                f"{did_you_mean(module, [n for n in names if n])}.{hint} "
                f"Use names from {side}.named_modules()."
            )
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{who}: the {side} module must be an nn.Module or a dotted name, got {type(module).__name__}."
        )
    for name, candidate in model.named_modules(remove_duplicate=False):
        if candidate is module:
            return name
    hint = ""
    if any(candidate is module for candidate in other.modules()):
        hint = f" It belongs to the {'teacher' if side == 'student' else 'student'}: swapped arguments?"
    raise ValueError(
        f"{who}: the {side} module {type(module).__name__} is not inside the {side} model "
        f"{type(model).__name__}.{hint} Pass a submodule of the {side} or its dotted name."
    )


class Mapping:
    """Pairs of (student module, teacher module, payload) for :func:`distill`.

    Args:
        student: The student model.
        teacher: The teacher model.

    Example:
        >>> from torch import nn
        >>> student = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
        >>> teacher = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
        >>> mapping = Mapping(student, teacher).add(student[1], "1", payload={"weight": 0.5})
        >>> list(mapping)
        [MappingEntry(student='1', teacher='1', payload={'weight': 0.5})]
        >>> mapping.payload("1")
        {'weight': 0.5}
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        for side, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, nn.Module):
                raise TypeError(f"Mapping(): the {side} must be an nn.Module, got {type(model).__name__}.")
        self.student = student
        self.teacher = teacher
        self._entries: list[MappingEntry] = []

    def add(
        self, student_module: nn.Module | str, teacher_module: nn.Module | str, payload: Any = None
    ) -> Mapping:
        """Append a pair; returns ``self`` so calls chain.

        Args:
            student_module: A submodule of the student, or its dotted name (``""`` = the whole model).
            teacher_module: A submodule of the teacher, or its dotted name.
            payload: Any object handed back with the pair (a loss module, a weight, a dict, ...).

        Returns:
            This mapping.

        Raises:
            KeyError: a name that is not in its model (the message names it and the closest names).
            ValueError: a module object that is not inside its model.
            TypeError: neither a module nor a string.
        """
        s_name = _resolve(self.student, student_module, "student", self.teacher, "Mapping.add()")
        t_name = _resolve(self.teacher, teacher_module, "teacher", self.student, "Mapping.add()")
        self._entries.append(MappingEntry(s_name, t_name, payload))
        return self

    def payload(self, student_module: nn.Module | str, teacher_module: nn.Module | str | None = None) -> Any:
        """The payload of the entry whose student side is ``student_module`` (and teacher side, if given).

        Raises:
            KeyError: no such entry, or several entries match and ``teacher_module`` was not given.
        """
        s_name = _resolve(self.student, student_module, "student", self.teacher, "Mapping.payload()")
        found = [e for e in self._entries if e.student == s_name]
        if teacher_module is not None:
            t_name = _resolve(self.teacher, teacher_module, "teacher", self.student, "Mapping.payload()")
            found = [e for e in found if e.teacher == t_name]
        if not found:
            raise KeyError(
                f"Mapping.payload(): no entry for student module {s_name!r}"
                f"{did_you_mean(s_name, [e.student for e in self._entries])}. Add it with mapping.add()."
            )
        if len(found) > 1:
            raise KeyError(
                f"Mapping.payload(): {len(found)} entries for student module {s_name!r} (teachers "
                f"{[e.teacher for e in found]}); pass teacher_module to pick one."
            )
        return found[0].payload

    def __iter__(self) -> Iterator[MappingEntry]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{e.student!r}->{e.teacher!r}" for e in self._entries)
        return f"Mapping({type(self.student).__name__} <- {type(self.teacher).__name__}: [{pairs}])"


class DistillModel:
    """What ``with distill(...) as distill_model`` gives: call it like the student.

    ``distill_model(*args, **kwargs)`` runs the teacher (in eval mode, under ``torch.no_grad`` when
    ``teacher_no_grad``) and then the student on the same inputs, and returns the list of
    ``(student_output, teacher_output, payload)`` triples in mapping order; a module called several
    times in one forward gives one triple per call, in call order. After the call,
    :attr:`student_output` and :attr:`teacher_output` hold the models' own final outputs.
    :meth:`call_batch` does the same for a batch's inputs (tensor, tuple/list or dict, as
    :func:`torchpare.model_io.call_model` calls a model).

    The mapped modules' outputs are captured by :class:`~torchpare.record.ModuleOutputsRecorder` s,
    one :class:`~torchpare.record.RecorderManager` per side, active only while that side runs.
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, mapping: Mapping, teacher_no_grad: bool
    ) -> None:
        self.student = student
        self.teacher = teacher
        self.mapping = mapping
        self.teacher_no_grad = teacher_no_grad
        self.student_output: Any = None
        self.teacher_output: Any = None
        self._recorders: dict[str, RecorderManager] = {}
        self._teacher_modes: dict[nn.Module, bool] = {}
        self._entries: list[MappingEntry] = []
        self._active = False

    def __enter__(self) -> DistillModel:
        if self._active:
            raise RuntimeError("distill(): this context is already entered; use a new distill(...) call.")
        self._entries = list(self.mapping)  # entries added inside the block are not recorded: snapshot
        self._recorders = {}
        for side, model, attr in (("teacher", self.teacher, "teacher"), ("student", self.student, "student")):
            names = dict.fromkeys(getattr(e, attr) for e in self._entries)
            manager = RecorderManager({name: ModuleOutputsRecorder(name) for name in names})
            manager.initialize(model)
            self._recorders[side] = manager
        if self.teacher is not self.student:
            # per module: a teacher may mix modes (frozen norms in a training model), restore them all
            self._teacher_modes = {m: m.training for m in self.teacher.modules()}
            self.teacher.eval()
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        for manager in self._recorders.values():
            for _, recorder in manager:
                recorder.reset_data_buffer()
        self._recorders = {}
        for module, training in self._teacher_modes.items():
            module.training = training
        self._teacher_modes = {}
        self._active = False

    def __call__(self, *args: Any, **kwargs: Any) -> list[tuple[Any, Any, Any]]:
        return self._run(lambda model: model(*args, **kwargs))

    def call_batch(self, inputs: Any) -> list[tuple[Any, Any, Any]]:
        """Like calling the object, with a batch's inputs: ``model(x)``, ``model(*x)`` or ``model(**x)``."""
        return self._run(lambda model: call_model(model, inputs))

    def _run(self, call: Callable[[nn.Module], Any]) -> list[tuple[Any, Any, Any]]:
        if not self._active:
            raise RuntimeError("DistillModel: called outside its `with distill(...)` block.")
        self.student_output = self.teacher_output = None
        if self.teacher is not self.student and self.teacher.training:
            self.teacher.eval()  # the user may have called .train() on a parent inside the block
        with self._recorders["teacher"], torch.no_grad() if self.teacher_no_grad else torch.enable_grad():
            self.teacher_output = call(self.teacher)
        with self._recorders["student"]:
            self.student_output = call(self.student)
        triples: list[tuple[Any, Any, Any]] = []
        for entry in self._entries:
            s_calls = self._recorders["student"].get_recorder(entry.student).data_buffer
            t_calls = self._recorders["teacher"].get_recorder(entry.teacher).data_buffer
            if not s_calls or not t_calls:
                missing = [
                    f"{side} module {name!r}"
                    for side, name, calls in (
                        ("student", entry.student, s_calls),
                        ("teacher", entry.teacher, t_calls),
                    )
                    if not calls
                ]
                raise ValueError(
                    f"distill(): the mapped {' and '.join(missing)} did not run in the forward; "
                    f"map modules that the model's forward calls."
                )
            if len(s_calls) != len(t_calls):
                raise ValueError(
                    f"distill(): student module {entry.student!r} ran {len(s_calls)} times but teacher module "
                    f"{entry.teacher!r} ran {len(t_calls)} times in one forward; map modules called equally often."
                )
            triples.extend((s, t, entry.payload) for s, t in zip(s_calls, t_calls))
        return triples


def distill(
    *, student: nn.Module, teacher: nn.Module, mapping: Mapping, teacher_no_grad: bool = True
) -> DistillModel:
    """A context manager that pairs student and teacher intermediate outputs per forward.

    Hooks are registered on ``__enter__`` and removed on ``__exit__`` (also when the block raises);
    the teacher is put in eval mode inside the block and its train/eval mode is restored afterwards.

    Args:
        student: The student model (keyword-only, like every argument).
        teacher: The teacher model.
        mapping: A :class:`Mapping` built for exactly these two models.
        teacher_no_grad: Run the teacher under ``torch.no_grad()`` (default True).

    Returns:
        A :class:`DistillModel` to use in a ``with`` statement.

    Raises:
        ValueError: ``mapping`` was made for other models (or with student and teacher swapped).
        TypeError: ``mapping`` is not a :class:`Mapping`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> student = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        >>> teacher = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        >>> mapping = Mapping(student, teacher).add("0", "0", payload=nn.MSELoss())
        >>> with distill(student=student, teacher=teacher, mapping=mapping) as distill_model:
        ...     loss = sum(payload(s, t) for s, t, payload in distill_model(torch.randn(3, 4)))
        >>> distill_model.student_output.shape, loss.requires_grad
        (torch.Size([3, 2]), True)
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"distill(): mapping must be a Mapping, got {type(mapping).__name__}.")
    if mapping.student is not student or mapping.teacher is not teacher:
        swapped = mapping.student is teacher and mapping.teacher is student
        raise ValueError(
            "distill(): the mapping was made for other models"
            + (" (student and teacher swapped)" if swapped else "")
            + "; build it with Mapping(student, teacher) for the models passed here."
        )
    return DistillModel(student, teacher, mapping, teacher_no_grad)
