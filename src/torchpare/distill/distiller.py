"""ConfigurableDistiller: recorders + connectors + losses wired by one validated mapping.

The distiller owns what distillation adds to a student: the recorders that capture student and
teacher tensors, the deliveries that replay teacher function outputs on the student side, the
connectors (trainable adapters) and the distillation losses. It is an ``nn.Module`` so connectors
and losses with state train and save together with the student.

``loss_forward_mappings`` says where each argument of each loss's ``forward`` comes from::

    {loss_name: {loss_arg: source}}

A ``source`` is one of

* a recorder: ``{"from_student": bool, "recorder": name, "record_idx": 0, "data_idx": None,
  "connector": name}``; ``record_idx`` picks the call (a module called twice records twice),
  ``data_idx`` picks an element of a tuple output (int) or a field of a dict / Hugging Face
  ``ModelOutput`` (str, e.g. ``"logits"``), or follows a path into nested outputs
  (``"hidden_states.2"`` or ``("hidden_states", 2)``); ``connector`` (optional) passes the tensor through
  ``connectors[name]`` first.
* batch data: ``{"from_data": key}``; the value is ``data[key]`` from
  ``compute_distill_losses(data=...)``. The algorithms pass ``{"targets": targets, "indices": indices,
  **extra}``, so CRD maps ``idx`` with ``{"from_data": "indices"}`` and DKD maps ``gt_labels`` with
  ``{"from_data": "targets"}``.

Everything is checked in the constructor, before any training: unknown losses, arguments that the
loss's ``forward`` does not take, required arguments left unmapped, unknown recorders and connectors,
a recorder looked up on the wrong side, student/teacher argument names mapped from the wrong side,
malformed ``data_idx`` paths and delivery paths that do not import; all problems are reported
together with their key paths (:meth:`ConfigurableDistiller.config_errors` returns them).

Algorithms run each model inside :meth:`ConfigurableDistiller.recording` (``"teacher"`` or
``"student"``) and then call :meth:`ConfigurableDistiller.compute_distill_losses`; nothing else.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.deliver import BaseDelivery, DeliveryManager
from torchpare.deliver.manager import named_deliveries
from torchpare.distill.loss_schedule import LossSchedules, loss_key
from torchpare.record import BaseRecorder, RecorderManager
from torchpare.record.base import normalize_data_idx
from torchpare.registry import CONNECTORS, DELIVERIES, DISTILLERS, LOSSES, RECORDERS, UnknownTypeError

__all__ = ["ConfigurableDistiller", "DistillerConfigError", "MissingDataError", "loss_key"]

Side = Literal["student", "teacher"]

_RECORDER_KEYS = ("from_student", "recorder", "record_idx", "data_idx", "connector")
_DATA_KEYS = ("from_data",)
# Team convention for loss forward names: these must come from the student / the teacher side.
_STUDENT_ARGS = frozenset({"preds_S", "s_feature", "s_features", "logits_S"})
_TEACHER_ARGS = frozenset({"preds_T", "t_feature", "t_features", "logits_T"})


class DistillerConfigError(ValueError):
    """A ConfigurableDistiller config is inconsistent (named loss, argument and key in the message).

    Attributes:
        problems: ``[(key_path, message), ...]``, every problem found (key paths relative to the
            distiller's config, e.g. ``"distill_losses.kd.type"``).
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _text(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.removeprefix("ConfigurableDistiller: ")


def _problems_of(exc: BaseException) -> list[tuple[str, str]]:
    """The ``(key path, message)`` pairs an exception of the constructor carries."""
    problems = getattr(exc, "problems", None)
    if problems:
        return [(path, message.removeprefix("ConfigurableDistiller: ")) for path, message in problems]
    return [("", _text(exc))]


def _raise_problems(problems: list[tuple[str, BaseException]]) -> None:
    """One problem: raise it as it is (its type and message), with ``problems`` attached; several: one
    :class:`DistillerConfigError` listing them all with their key paths."""
    if not problems:
        return
    pairs = [(path, str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
             for path, exc in problems]
    if len(problems) == 1:
        exc = problems[0][1]
        if not isinstance(exc, ValueError | TypeError | KeyError):
            exc = DistillerConfigError(pairs[0][1])
        exc.problems = pairs  # type: ignore[attr-defined]
        raise exc
    lines = "\n".join(f"  - {path}: {message.removeprefix('ConfigurableDistiller: ')}" for path, message in pairs)
    raise DistillerConfigError(f"ConfigurableDistiller: {len(pairs)} problems:\n{lines}", pairs)


def _build_each(
    specs: Any, registry: Any, what: str, kind: type, problems: list[tuple[str, BaseException]]
) -> dict[str, Any]:
    """Build every ``name -> spec`` of one section; each failure is added to ``problems`` with its key path."""
    if specs is None:
        return {}
    if what == "distill_deliveries":
        try:
            specs = named_deliveries(specs)
        except (TypeError, ValueError) as exc:
            problems.append((what, exc))
            return {}
    if not isinstance(specs, Mapping):
        problems.append((what, TypeError(
            f"ConfigurableDistiller: {what} must be a dict name -> object or config dict, "
            f"got {type(specs).__name__}."
        )))
        return {}
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        try:
            obj = registry.build(spec)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append((f"{what}.{name}{'.type' if isinstance(exc, UnknownTypeError) else ''}", exc))
            continue
        if not isinstance(obj, kind):
            problems.append((f"{what}.{name}", TypeError(
                f"ConfigurableDistiller: {what}[{name!r}] built a {type(obj).__name__}, "
                f"expected a {kind.__name__}."
            )))
            continue
        out[name] = obj
    return out


class MissingDataError(KeyError):
    """A ``{"from_data": key}`` source found no ``key`` in the batch data of this step."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _holds_grad(data: Any) -> bool:
    """Whether a record (tensor, or tuple/list/dict/``ModelOutput`` of them) holds an autograd graph."""
    if isinstance(data, torch.Tensor):
        return data.requires_grad
    if isinstance(data, Mapping):
        return any(_holds_grad(v) for v in data.values())
    if isinstance(data, list | tuple):
        return any(_holds_grad(v) for v in data)
    return False


def _detach(data: Any) -> Any:
    """Detach tensors inside tensors/tuples/lists/dicts; other objects pass through."""
    if isinstance(data, torch.Tensor):
        return data.detach()
    if isinstance(data, tuple) and not hasattr(data, "_fields"):
        return tuple(_detach(d) for d in data)
    if isinstance(data, list):
        return [_detach(d) for d in data]
    if isinstance(data, dict) and type(data) is dict:
        return {k: _detach(v) for k, v in data.items()}
    return data


@DISTILLERS.register()
class ConfigurableDistiller(nn.Module):
    """Compute distillation losses from recorded student/teacher tensors, as a config describes.

    Args:
        student_recorders: Name -> recorder (or config dict like ``{"type": "ModuleOutputs",
            "source": "fc"}``) on the student.
        teacher_recorders: Same on the teacher.
        distill_deliveries: Name -> delivery (or config dict) replaying teacher outputs on the student,
            or MMRazor's list form ``[config, ...]`` (see :class:`~torchpare.deliver.DeliveryManager`).
            Their import paths are checked here.
        connectors: Name -> connector module or config dict (built through ``CONNECTORS``).
        distill_losses: Name -> loss module or config dict (built through ``LOSSES``). The loss
            ``name`` appears as ``"loss_<name>"`` in :meth:`compute_distill_losses` (``name`` itself
            when it already starts with ``loss_``).
        loss_forward_mappings: ``{loss_name: {loss_arg: source}}``; see the module docstring.
        loss_schedules: ``{loss_name: {weight, stop_epoch/step, detach_epoch/step}}``: weight warm-up
            or decay, stop and detach points per loss (:mod:`torchpare.distill.loss_schedule`).
        record_only_needed: Hook only the recorders that ``loss_forward_mappings`` read (per side, see
            :attr:`needed_recorders`); the others cost nothing during the forwards and reading them
            raises a :class:`~torchpare.record.RecordIndexError` that says so. ``False``: hook every
            recorder (to read extra recorders yourself with :meth:`get_record`).
        release_after_losses: Once :meth:`compute_distill_losses` has read the records, drop those that
            hold an autograd graph (the student's, a teacher that runs with grad), so their memory goes
            with the backward instead of living until the next recording. Records made under
            ``no_grad`` (a frozen teacher) are kept: the next recording replaces them one by one, which
            lets the allocator reuse their memory (releasing them all at once measured 1.27 x a plain
            teacher forward instead of 1.01 x with 50 recorders read; ``docs/benchmarks.md``).
            ``"all"``: drop every record. ``False``: keep them all until the next recording, to read
            them afterwards.

    Attributes:
        student_recorders, teacher_recorders: :class:`~torchpare.record.RecorderManager` of each side
            (context managers; kept out of ``state_dict`` since they reference the models).
        deliveries: The :class:`~torchpare.deliver.DeliveryManager`.
        connectors, distill_losses: ``nn.ModuleDict`` s (train and save with the distiller).

    Raises:
        DistillerConfigError: (a ValueError) the mapping names an unknown loss, argument, recorder or
            connector, leaves a required loss argument unmapped, or mixes up student and teacher sides;
            a delivery path does not import. The message names the loss, the argument and the bad key
            and lists the valid ones. Every problem is collected first: a single one is raised as it
            is (also the registry's ``UnknownTypeError``/``BuildError``), several together as one
            ``DistillerConfigError`` whose ``problems`` list ``(key_path, message)``.
        TypeError: a mapping entry is not a dict, or a built connector/loss is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchpare.distill.distiller import ConfigurableDistiller
        >>> class KL(nn.Module):
        ...     def forward(self, preds_S, preds_T):
        ...         return (preds_S - preds_T).pow(2).mean()
        >>> d = ConfigurableDistiller(
        ...     student_recorders={"fc": {"type": "ModuleOutputs", "source": "fc"}},
        ...     teacher_recorders={"fc": {"type": "ModuleOutputs", "source": "fc"}},
        ...     distill_losses={"kd": KL()},
        ...     loss_forward_mappings={"kd": {
        ...         "preds_S": {"from_student": True, "recorder": "fc"},
        ...         "preds_T": {"from_student": False, "recorder": "fc"}}})
        >>> student, teacher = nn.Sequential(), nn.Sequential()
        >>> student.fc, teacher.fc = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> d.prepare_from_student(student); d.prepare_from_teacher(teacher)
        >>> x = torch.randn(2, 4)
        >>> with d.teacher_recorders, torch.no_grad():
        ...     _ = teacher(x)
        >>> with d.student_recorders:
        ...     _ = student(x)
        >>> sorted(d.compute_distill_losses())
        ['loss_kd']
    """

    def __init__(
        self,
        student_recorders: Mapping[str, Any] | None = None,
        teacher_recorders: Mapping[str, Any] | None = None,
        distill_deliveries: Mapping[str, Any] | Sequence[Any] | None = None,
        connectors: Mapping[str, Any] | None = None,
        distill_losses: Mapping[str, Any] | None = None,
        loss_forward_mappings: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        loss_schedules: Mapping[str, Any] | None = None,
        record_only_needed: bool = True,
        release_after_losses: bool | Literal["all"] = True,
    ) -> None:
        super().__init__()
        if release_after_losses not in (True, False, "all"):
            raise ValueError(
                f"ConfigurableDistiller: release_after_losses must be True, False or 'all', got "
                f"{release_after_losses!r}."
            )
        self.record_only_needed = bool(record_only_needed)
        self.release_after_losses: bool | Literal["all"] = release_after_losses
        problems: list[tuple[str, BaseException]] = []
        built = {
            "student_recorders": _build_each(student_recorders, RECORDERS, "student_recorders", BaseRecorder, problems),
            "teacher_recorders": _build_each(teacher_recorders, RECORDERS, "teacher_recorders", BaseRecorder, problems),
            "distill_deliveries": _build_each(
                distill_deliveries, DELIVERIES, "distill_deliveries", BaseDelivery, problems
            ),
            "connectors": _build_each(connectors, CONNECTORS, "connectors", nn.Module, problems),
            "distill_losses": _build_each(distill_losses, LOSSES, "distill_losses", nn.Module, problems),
        }
        for name, delivery in built["distill_deliveries"].items():  # a typo in a path fails now, not at step 1
            try:
                delivery.check_path()
            except (ImportError, AttributeError, ValueError, TypeError) as exc:
                key = "method_path" if hasattr(delivery, "method_path") else "func_path"
                problems.append((f"distill_deliveries.{name}.{key}", DistillerConfigError(str(exc))))
        # Managers hold references to the models; keep them out of the module tree (and state_dict).
        self.__dict__["student_recorders"] = RecorderManager(built["student_recorders"])
        self.__dict__["teacher_recorders"] = RecorderManager(built["teacher_recorders"])
        self.__dict__["deliveries"] = DeliveryManager(built["distill_deliveries"])
        self._has_deliveries = bool(distill_deliveries)
        self.connectors = nn.ModuleDict(built["connectors"])
        self.distill_losses = nn.ModuleDict(built["distill_losses"])
        try:
            self.loss_forward_mappings = _copy_mappings(loss_forward_mappings)
        except TypeError as exc:
            problems.append(("loss_forward_mappings", exc))
            self.loss_forward_mappings = {}
        unbuilt = {path.split(".")[1] for path, _ in problems if path.count(".") >= 1}
        for path, message in self._mapping_problems(unbuilt):
            problems.append((path, DistillerConfigError(message)))
        self.loss_schedules: LossSchedules | None = None
        if loss_schedules:
            try:
                self.loss_schedules = LossSchedules(loss_schedules, list(self.distill_losses))
            except (TypeError, ValueError, KeyError) as exc:
                problems.append(("loss_schedules", exc))
        _raise_problems(problems)
        if self.record_only_needed:
            self._apply_needed()

    @property
    def needed_recorders(self) -> dict[Side, frozenset[str]]:
        """The recorder names ``loss_forward_mappings`` read, per side (``{"student": ..., "teacher": ...}``).

        These are the only recorders a :meth:`recording` block hooks when ``record_only_needed`` is on.

        Example:
            >>> d = ConfigurableDistiller(
            ...     student_recorders={"fc": {"type": "ModuleOutputs", "source": "fc"},
            ...                        "unused": {"type": "ModuleOutputs", "source": "body"}},
            ...     teacher_recorders={"fc": {"type": "ModuleOutputs", "source": "fc"}},
            ...     distill_losses={"kd": {"type": "KLDivergence"}},
            ...     loss_forward_mappings={"kd": {
            ...         "preds_S": {"from_student": True, "recorder": "fc"},
            ...         "preds_T": {"from_student": False, "recorder": "fc"}}})
            >>> sorted(d.needed_recorders["student"]), sorted(d.needed_recorders["teacher"])
            (['fc'], ['fc'])
        """
        needed: dict[Side, set[str]] = {"student": set(), "teacher": set()}
        for forward_mappings in self.loss_forward_mappings.values():
            for src in forward_mappings.values():
                if "recorder" in src:
                    needed["student" if src["from_student"] else "teacher"].add(src["recorder"])
        return {side: frozenset(names) for side, names in needed.items()}

    def _apply_needed(self) -> None:
        """Hook only the recorders the losses read; the others say why they are empty when read."""
        for side, names in self.needed_recorders.items():
            manager = self.student_recorders if side == "student" else self.teacher_recorders
            manager.set_needed(names)
            for name, recorder in manager:
                if name not in names:
                    recorder._idle_reason = (
                        f"ConfigurableDistiller hooks only the recorders loss_forward_mappings read, and no "
                        f"loss reads {side} recorder {name!r}, so it records nothing; map it to a loss or "
                        f"build the distiller with record_only_needed=False"
                    )

    def _release_records(self) -> None:
        """Drop the records the losses have read (those holding a graph, or all with ``"all"``); reading
        one later says why it is empty."""
        reason = (
            "ConfigurableDistiller released the records after compute_distill_losses read them; build "
            "the distiller with release_after_losses=False to read them afterwards"
        )
        everything = self.release_after_losses == "all"
        for manager in (self.student_recorders, self.teacher_recorders):
            for name, recorder in manager:
                if name in manager.needed and (everything or _holds_grad(recorder.data_buffer)):
                    recorder.release()
                    recorder._idle_reason = reason

    @classmethod
    def config_errors(
        cls, cfg: Mapping[str, Any], student: nn.Module | None = None, teacher: nn.Module | None = None
    ) -> list[tuple[str, str]]:
        """Every problem of a distiller config, without raising: ``[(key_path, message), ...]``.

        The same checks as the constructor (it is what runs), plus, when the models are given, the
        recorder sources against them. The engine prefixes each key path with the config's own
        (``algorithm.distiller.distill_losses.kd.type: ...``).

        Args:
            cfg: The constructor's arguments (``type`` is ignored).
            student: The student to check ``student_recorders`` against (optional).
            teacher: The teacher to check ``teacher_recorders`` against (optional).

        Returns:
            ``(key path inside cfg, message)`` pairs; empty when the config is valid.

        Example:
            >>> ConfigurableDistiller.config_errors({"distill_losses": {"kd": {"type": "KLDivergenz"}}})[0][0]
            'distill_losses.kd.type'
        """
        cfg = {k: v for k, v in dict(cfg).items() if k != "type"}
        try:
            distiller = cls(**cfg)
        except Exception as exc:  # noqa: BLE001 - every problem is reported, with its key path
            return _problems_of(exc)
        found: list[tuple[str, str]] = []
        for side, model in (("student", student), ("teacher", teacher)):
            if model is None:
                continue
            manager = distiller.student_recorders if side == "student" else distiller.teacher_recorders
            bad = 0
            for name, recorder in manager:
                try:
                    recorder.initialize(model)
                except (AttributeError, TypeError, ValueError, KeyError) as exc:
                    bad += 1
                    found.append((f"{side}_recorders.{name}.source", _text(exc)))
            if not bad:
                prepare = distiller.prepare_from_student if side == "student" else distiller.prepare_from_teacher
                try:
                    prepare(model)
                except (AttributeError, TypeError, ValueError, KeyError) as exc:
                    found.append((f"{side}_recorders", _text(exc)))
        return found

    # -- set-up -----------------------------------------------------------------------------------
    def prepare_from_student(self, student: nn.Module) -> None:
        """Attach the student recorders to ``student`` (deliveries patch import paths and need no model).

        Raises:
            AttributeError: a recorder names a module/method that ``student`` does not have.
        """
        self.student_recorders.initialize(student)

    def prepare_from_teacher(self, teacher: nn.Module) -> None:
        """Attach the teacher recorders to ``teacher``.

        Raises:
            AttributeError: a recorder names a module/method that ``teacher`` does not have.
        """
        self.teacher_recorders.initialize(teacher)

    @contextlib.contextmanager
    def recording(self, side: Side) -> Iterator[ConfigurableDistiller]:
        """Record one side of a step: what every algorithm wraps each model's forward in.

        ``recording("teacher")`` starts a step: it empties every delivery queue (so a failed step
        leaves nothing behind), switches the deliveries to record, and activates the teacher
        recorders. ``recording("student")`` switches the deliveries to replay and activates the
        student recorders; when its block ends normally, a delivery whose queue is not empty (the
        student consumed fewer outputs than the teacher produced) is an error naming it. After an
        exception inside either block the queues are emptied.

        Both sides may be open at once (self-distillation: one forward fills both; deliveries are
        not allowed there). The old attributes (``student_recorders``, ``teacher_recorders``,
        ``deliveries``, :meth:`set_deliveries_override`) keep working for hand-written loops.

        Args:
            side: ``"teacher"`` or ``"student"``.

        Yields:
            The distiller.

        Raises:
            ValueError: ``side`` is neither ``"teacher"`` nor ``"student"``.
            DeliveryQueueLeftoverError: (a ValueError) after the student block, a delivery still holds
                teacher outputs.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> d = ConfigurableDistiller(
            ...     student_recorders={"out": {"type": "ModuleOutputs", "source": ""}},
            ...     teacher_recorders={"out": {"type": "ModuleOutputs", "source": ""}},
            ...     distill_losses={"mse": {"type": "MSELoss"}},
            ...     loss_forward_mappings={"mse": {
            ...         "s_feature": {"from_student": True, "recorder": "out"},
            ...         "t_feature": {"from_student": False, "recorder": "out"}}})
            >>> student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
            >>> d.prepare_from_student(student); d.prepare_from_teacher(teacher)
            >>> x = torch.randn(3, 2)
            >>> with d.recording("teacher"), torch.no_grad():
            ...     _ = teacher(x)
            >>> with d.recording("student"):
            ...     _ = student(x)
            >>> sorted(d.compute_distill_losses())
            ['loss_mse']
        """
        if side not in ("teacher", "student"):
            raise ValueError(
                f"ConfigurableDistiller.recording(): side must be 'teacher' or 'student', got {side!r}."
            )
        student = side == "student"
        manager = self.student_recorders if student else self.teacher_recorders
        if self.release_after_losses:
            for name, recorder in manager:
                if name in manager.needed:  # new records come: a "released" reason would mislead
                    recorder._idle_reason = None
        deliveries = self.deliveries if self._has_deliveries else None
        if deliveries is not None and not student:
            deliveries.clear()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(manager)
                if deliveries is not None:
                    deliveries.override_data = student
                    stack.enter_context(deliveries)
                yield self
        except BaseException:
            if deliveries is not None:
                deliveries.clear()
            raise
        if deliveries is not None and student:
            deliveries.check_consumed()

    def set_deliveries_override(self, override: bool) -> None:
        """``True``: deliveries replay recorded teacher outputs (student pass); ``False``: they record."""
        self.deliveries.override_data = override

    @property
    def has_deliveries(self) -> bool:
        """Whether any delivery is configured (algorithms skip the delivery context otherwise)."""
        return self._has_deliveries

    # -- loss computation -------------------------------------------------------------------------
    def get_record(
        self,
        recorder: str,
        from_student: bool,
        record_idx: int = 0,
        data_idx: int | str | Sequence[int | str] | None = None,
        connector: str | None = None,
        detach: bool = False,
    ) -> Any:
        """One recorded value, optionally through a connector.

        Args:
            recorder: Recorder name on the chosen side.
            from_student: Read the student (``True``) or teacher (``False``) recorders.
            record_idx: Which recorded call.
            data_idx: Element of a tuple output (int), field of a dict/``ModelOutput`` (str), or a
                path through nested outputs (``"hidden_states.2"`` or ``("hidden_states", 2)``).
            connector: Connector applied to the value.
            detach: Detach the value before the connector (used for teacher data in self/online
                distillation so the peer is not trained through the teacher side).

        Returns:
            The recorded (and connected) value.
        """
        manager = self.student_recorders if from_student else self.teacher_recorders
        rec = manager.get_recorder(recorder)
        value = rec.get_record_data(record_idx=record_idx, data_idx=data_idx)
        if detach:
            value = _detach(value)
        if connector is not None:
            value = self.connectors[connector](value)
        return value

    def compute_distill_losses(
        self, data: Mapping[str, Any] | None = None, detach_teacher: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run every distillation loss on its mapped inputs.

        Args:
            data: Batch values for ``{"from_data": key}`` sources, e.g. ``{"targets": y, "indices": i}``.
            detach_teacher: Detach teacher-side recordings (self and online distillation).

        Returns:
            ``{"loss_<name>": tensor}`` in the order of ``loss_forward_mappings`` (a name that already
            starts with ``loss_``, as in MMRazor configs, is kept as is: ``loss_kl`` -> ``"loss_kl"``).
            A loss that returns a dict contributes ``"loss_<name>.<key>"`` entries. With
            ``release_after_losses`` (the default) the records that hold a graph are dropped once
            read: call it once per recording.

        Raises:
            MissingDataError: (a KeyError) a ``from_data`` key is missing from ``data`` (the message lists the given keys).
        """
        data = data or {}
        active = {
            name: mappings
            for name, mappings in self.loss_forward_mappings.items()
            if self.loss_schedules is None or not self.loss_schedules.stopped(name)
        }
        for loss_name, forward_mappings in active.items():  # before any record is read (or released)
            for arg, src in forward_mappings.items():
                key = src.get("from_data")
                if "from_data" in src and (key not in data or data[key] is None):
                    given = sorted(k for k, v in data.items() if v is not None)
                    raise MissingDataError(
                        f"ConfigurableDistiller: loss {loss_name!r} argument {arg!r} reads "
                        f"{{'from_data': {key!r}}}, but compute_distill_losses(data=...) has no "
                        f"{key!r} (given: {', '.join(given) or 'nothing'}). Pass it to "
                        f"algo.loss(inputs, targets, {key}=...)."
                    )
        losses: dict[str, torch.Tensor] = {}
        cache: dict[tuple[Any, ...], Any] = {}
        for loss_name, forward_mappings in active.items():
            kwargs: dict[str, Any] = {}
            for arg, src in forward_mappings.items():
                if "from_data" in src:
                    kwargs[arg] = data[src["from_data"]]
                    continue
                side = bool(src["from_student"])
                cache_key = (
                    side,
                    src["recorder"],
                    src.get("record_idx", 0),
                    normalize_data_idx(src.get("data_idx")),
                    src.get("connector"),
                )
                if cache_key not in cache:  # one connector call per distinct input per step
                    cache[cache_key] = self.get_record(
                        src["recorder"],
                        side,
                        src.get("record_idx", 0),
                        src.get("data_idx"),
                        src.get("connector"),
                        detach=detach_teacher and not side,
                    )
                kwargs[arg] = cache[cache_key]
            out = self.distill_losses[loss_name](**kwargs)
            key = loss_key(loss_name)
            if isinstance(out, Mapping):
                for k, v in out.items():
                    losses[f"{key}.{k}"] = v
            else:
                losses[key] = out
        if self.release_after_losses:
            self._release_records()
        return losses if self.loss_schedules is None else self.loss_schedules.apply(losses)

    # -- validation -------------------------------------------------------------------------------
    def _mapping_problems(self, unbuilt: set[str]) -> list[tuple[str, str]]:
        """``(key path, message)`` for every inconsistency of ``loss_forward_mappings``; names in
        ``unbuilt`` (losses, recorders, connectors that failed to build) are not reported again."""
        found: list[tuple[str, str]] = []
        losses = list(self.distill_losses)
        student_recs = list(self.student_recorders.recorders)
        teacher_recs = list(self.teacher_recorders.recorders)
        connectors = list(self.connectors)
        for loss_name in self.loss_forward_mappings:
            if loss_name not in self.distill_losses and loss_name not in unbuilt:
                found.append((
                    f"loss_forward_mappings.{loss_name}",
                    f"ConfigurableDistiller: loss_forward_mappings names loss {loss_name!r}, which is not "
                    f"in distill_losses{did_you_mean(loss_name, losses) or '.'} "
                    f"Valid losses: {', '.join(losses) or '(none)'}.",
                ))
        for loss_name in losses:
            if loss_name not in self.loss_forward_mappings:
                required = _required_args(self.distill_losses[loss_name])
                if required:
                    found.append((
                        f"loss_forward_mappings.{loss_name}",
                        f"ConfigurableDistiller: loss {loss_name!r} has no entry in loss_forward_mappings; "
                        f"map its required arguments {', '.join(map(repr, required))}.",
                    ))
        for loss_name, args in self.loss_forward_mappings.items():
            if loss_name not in self.distill_losses:
                continue
            loss = self.distill_losses[loss_name]
            params, has_var_kw = _forward_params(loss)
            for arg in args:
                if arg not in params and not has_var_kw:
                    found.append((
                        f"loss_forward_mappings.{loss_name}.{arg}",
                        f"ConfigurableDistiller: loss {loss_name!r} ({type(loss).__name__}) has no forward "
                        f"argument {arg!r}{did_you_mean(arg, params) or '.'} "
                        f"Valid arguments: {', '.join(params) or '(none)'}.",
                    ))
            missing = [a for a in _required_args(loss) if a not in args]
            if missing:
                found.append((
                    f"loss_forward_mappings.{loss_name}",
                    f"ConfigurableDistiller: loss {loss_name!r} ({type(loss).__name__}) required forward "
                    f"argument(s) {', '.join(map(repr, missing))} not mapped in "
                    f"loss_forward_mappings[{loss_name!r}]; add e.g. {{{missing[0]!r}: "
                    f"{{'from_student': ..., 'recorder': ...}}}} or {{'from_data': ...}}.",
                ))
            for arg, src in args.items():
                if src.get("recorder") in unbuilt or src.get("connector") in unbuilt:
                    continue
                try:
                    self._check_source(loss_name, arg, src, student_recs, teacher_recs, connectors)
                except DistillerConfigError as exc:
                    found.append((f"loss_forward_mappings.{loss_name}.{arg}", str(exc)))
        return found

    def _check_source(
        self,
        loss_name: str,
        arg: str,
        src: dict[str, Any],
        student_recs: list[str],
        teacher_recs: list[str],
        connectors: list[str],
    ) -> None:
        where = f"ConfigurableDistiller: loss {loss_name!r} argument {arg!r}"
        if "from_data" in src:
            for key in src:
                if key not in _DATA_KEYS:
                    raise DistillerConfigError(
                        f"{where}: unknown key {key!r} in a 'from_data' source; a data source takes only "
                        f"'from_data' (recorder keys {', '.join(_RECORDER_KEYS)} do not apply)."
                    )
            if not isinstance(src["from_data"], str) or not src["from_data"]:
                raise DistillerConfigError(
                    f"{where}: 'from_data' must be a data key such as 'targets' or 'indices', "
                    f"got {src['from_data']!r}."
                )
            return
        for key in src:
            if key not in _RECORDER_KEYS:
                raise DistillerConfigError(
                    f"{where}: unknown key {key!r}{did_you_mean(key, [*_RECORDER_KEYS, *_DATA_KEYS]) or '.'} "
                    f"Valid keys: {', '.join([*_RECORDER_KEYS, *_DATA_KEYS])}."
                )
        for key in ("from_student", "recorder"):
            if key not in src:
                raise DistillerConfigError(f"{where}: missing key {key!r} in {dict(src)!r}.")
        if not isinstance(src["from_student"], bool):
            raise DistillerConfigError(
                f"{where}: 'from_student' must be True or False, got {src['from_student']!r}."
            )
        from_student, recorder = src["from_student"], src["recorder"]
        side, own, other = (
            ("student", student_recs, teacher_recs)
            if from_student
            else ("teacher", teacher_recs, student_recs)
        )
        if recorder not in own:
            hint = ""
            if recorder in other:
                hint = (
                    f" It is a {'teacher' if from_student else 'student'} recorder: "
                    f"set 'from_student': {not from_student} or add it to {side}_recorders."
                )
            raise DistillerConfigError(
                f"{where}: recorder {recorder!r} is not in {side}_recorders"
                f"{did_you_mean(recorder, own) or '.'} Valid {side} recorders: {', '.join(own) or '(none)'}.{hint}"
            )
        # a loss fed by the teacher alone whose student argument goes through a connector pre-trains that
        # teacher-side connector (FT's paraphraser): its student argument may come from the teacher
        teacher_only = src.get("connector") is not None and all(
            v.get("from_student") is False for v in self.loss_forward_mappings[loss_name].values()
            if "from_data" not in v)
        if arg in _STUDENT_ARGS and not from_student and not teacher_only:
            raise DistillerConfigError(
                f"{where}: {arg!r} is the student side of the loss but is mapped with "
                f"'from_student': False (recorder {recorder!r}); set 'from_student': True."
            )
        if arg in _TEACHER_ARGS and from_student:
            raise DistillerConfigError(
                f"{where}: {arg!r} is the teacher side of the loss but is mapped with "
                f"'from_student': True (recorder {recorder!r}); set 'from_student': False."
            )
        connector = src.get("connector")
        if connector is not None and connector not in connectors:
            raise DistillerConfigError(
                f"{where}: connector {connector!r} is not in connectors{did_you_mean(connector, connectors) or '.'} "
                f"Valid connectors: {', '.join(connectors) or '(none)'}."
            )
        record_idx = src.get("record_idx", 0)
        if not isinstance(record_idx, int) or isinstance(record_idx, bool) or record_idx < 0:
            raise DistillerConfigError(f"{where}: 'record_idx' must be an int >= 0, got {record_idx!r}.")
        try:
            normalize_data_idx(src.get("data_idx"))
        except (TypeError, ValueError) as exc:
            raise DistillerConfigError(f"{where}: {exc}") from None


def _copy_mappings(
    mappings: Mapping[str, Mapping[str, Mapping[str, Any]]] | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """A plain-dict copy (later edits of the caller's config do not leak in), with type checks."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for loss_name, args in dict(mappings or {}).items():
        if not isinstance(args, Mapping):
            raise TypeError(
                f"ConfigurableDistiller: loss_forward_mappings[{loss_name!r}] must be a dict "
                f"loss_arg -> source, got {type(args).__name__}."
            )
        out[loss_name] = {}
        for arg, src in args.items():
            if not isinstance(src, Mapping):
                raise TypeError(
                    f"ConfigurableDistiller: loss {loss_name!r} argument {arg!r}: the source must be a dict "
                    f"like {{'from_student': True, 'recorder': 'fc'}} or {{'from_data': 'targets'}}, "
                    f"got {type(src).__name__}."
                )
            out[loss_name][arg] = dict(src)
    return out


def _forward_params(module: nn.Module) -> tuple[list[str], bool]:
    sig = inspect.signature(module.forward)
    names = [
        n
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, has_var_kw


def _required_args(module: nn.Module) -> list[str]:
    sig = inspect.signature(module.forward)
    return [
        n
        for n, p in sig.parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
