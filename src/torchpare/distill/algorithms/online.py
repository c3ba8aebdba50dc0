"""OnlineDistill: two or more students teach each other while they train (deep mutual learning)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    StudentLoss,
    build_distiller,
    build_model,
    forward_model,
)
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.registry import ALGORITHMS

__all__ = ["OnlineDistill"]


def _pair_key(student: str, teacher: str) -> str:
    return f"{student}<-{teacher}"


@ALGORITHMS.register(aliases=("Online", "DML"))
class OnlineDistill(BaseAlgorithm):
    """Train several students together; each learns from the (detached) outputs of the others (DML).

    For every ordered pair ``(student, peer)`` a copy of ``distiller`` is built with its student
    recorders on ``student`` and its teacher recorders on ``peer``. Each model runs once per step with
    the recorders of every pair it belongs to; peers' recordings are detached, so a model is trained
    only through its own student-side losses, as in Zhang et al., "Deep Mutual Learning" (2018).
    :meth:`loss` returns ``student.<name>.loss`` per model and ``distill.<s><-<t>.loss_<name>`` per
    pair and distillation loss.

    Args:
        students: Name -> model (module or ``MODELS`` config dict); at least two.
        distiller: A :class:`ConfigurableDistiller` or config dict, copied for every pair. Recorder
            sources must exist in every model (same module names), or give ``pairs`` explicitly.
        pairs: ``(student, peer)`` name pairs; default all ordered pairs of distinct students.
        student_loss: ``(outputs, targets) -> tensor``; default cross-entropy (``-100`` ignored).
        calculate_student_loss: Add each model's supervised loss as ``student.<name>.loss``.

    Raises:
        ValueError: fewer than two students, a pair naming an unknown student, or deliveries.

    Example:
        >>> import torch
        >>> from torchpare.zoo import DigitsMLP
        >>> kd = {"student_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc2"}},
        ...       "teacher_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc2"}},
        ...       "distill_losses": {"kl": {"type": "KLDivergence", "tau": 1}},
        ...       "loss_forward_mappings": {"kl": {
        ...           "preds_S": {"from_student": True, "recorder": "fc"},
        ...           "preds_T": {"from_student": False, "recorder": "fc"}}}}
        >>> algo = OnlineDistill({"a": DigitsMLP(), "b": DigitsMLP()}, kd)
        >>> sorted(algo.loss(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])))
        ['distill.a<-b.loss_kl', 'distill.b<-a.loss_kl', 'student.a.loss', 'student.b.loss']
    """

    def __init__(
        self,
        students: Mapping[str, nn.Module | Mapping[str, Any]],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        pairs: Sequence[tuple[str, str]] | None = None,
        student_loss: StudentLoss | None = None,
        calculate_student_loss: bool = True,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        if len(students) < 2:
            raise ValueError(
                f"{who}: needs at least two students, got {len(students)} ({', '.join(students)})."
            )
        names = list(students)
        self.students = nn.ModuleDict(
            {n: build_model(m, f"{who}(students[{n!r}])") for n, m in students.items()}
        )
        if pairs is None:
            pairs = [(s, t) for s in names for t in names if s != t]
        for s, t in pairs:
            for n in (s, t):
                if n not in self.students:
                    raise ValueError(
                        f"{who}: pair ({s!r}, {t!r}) names unknown student {n!r}{did_you_mean(n, names) or '.'} "
                        f"Students: {', '.join(names)}."
                    )
            if s == t:
                raise ValueError(f"{who}: pair ({s!r}, {t!r}) pairs a student with itself; use SelfDistill.")
        self.pairs = [tuple(p) for p in pairs]
        self.distillers = nn.ModuleDict()
        for s, t in self.pairs:
            d = build_distiller(copy.deepcopy(distiller), f"{who}(distiller)")
            if d.has_deliveries:
                raise ValueError(
                    f"{who}: deliveries are not supported (every model is a student and runs with grad); "
                    f"remove distill_deliveries."
                )
            d.prepare_from_student(self.students[s])
            d.prepare_from_teacher(self.students[t])
            self.distillers[_pair_key(s, t)] = d
        self.student_loss = student_loss
        self.calculate_student_loss = calculate_student_loss

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        for name, model in self.students.items():
            # a pair never has s == t, so each model is on one side of every pair it belongs to
            sides = [
                (d, "student" if s == name else "teacher")
                for (s, t), d in zip(self.pairs, self.distillers.values())
                if name in (s, t)
            ]
            outputs = self._run(model, inputs, sides)
            if self.calculate_student_loss:
                self._add_supervised(losses, f"student.{name}.loss", outputs, targets)
        for key, d in self.distillers.items():
            self._add_distill(losses, f"distill.{key}.", d, data, detach_teacher=True)
        return losses

    def forward(self, inputs: Any) -> dict[str, Any]:
        """Every model's output, by name."""
        return {name: forward_model(m, inputs) for name, m in self.students.items()}
