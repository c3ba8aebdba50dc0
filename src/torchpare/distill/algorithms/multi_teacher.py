"""MultiTeacherDistill: several frozen teachers, each with its own distiller and weight."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    StudentLoss,
    build_distiller,
    build_model,
    load_checkpoint,
)
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.registry import ALGORITHMS

__all__ = ["MultiTeacherDistill"]


@ALGORITHMS.register(aliases=("MultiTeacher",))
class MultiTeacherDistill(BaseAlgorithm):
    """Distil several frozen teachers into one student.

    Each teacher ``name`` has its own distiller (recorders on the student and on that teacher, its own
    connectors and losses) and a weight. The student runs once with every distiller's student
    recorders on; each teacher's distillation losses are scaled by its weight and reported as
    ``distill.<name>.loss_<loss>``.

    Args:
        student: The student, or a ``MODELS`` config dict.
        teachers: Name -> teacher (module or ``MODELS`` config dict).
        distillers: Name -> :class:`ConfigurableDistiller` or config dict; same names as ``teachers``.
        weights: Name -> weight of that teacher's losses (default 1.0 each).
        student_loss: ``(outputs, targets) -> tensor``; default cross-entropy (``-100`` ignored).
        teacher_ckpts: Name -> checkpoint path loaded into that teacher.
        calculate_student_loss: Add the supervised loss as ``student.loss``.

    Raises:
        ValueError: ``teachers``, ``distillers`` and ``weights`` do not have matching names.

    Example:
        >>> import torch
        >>> from torchpare.zoo import DigitsMLP, DigitsSmallCNN
        >>> kd = {"student_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc2"}},
        ...       "teacher_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc"}},
        ...       "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4}},
        ...       "loss_forward_mappings": {"kl": {
        ...           "preds_S": {"from_student": True, "recorder": "fc"},
        ...           "preds_T": {"from_student": False, "recorder": "fc"}}}}
        >>> algo = MultiTeacherDistill(DigitsMLP(), {"a": DigitsSmallCNN(), "b": DigitsSmallCNN()},
        ...                            {"a": kd, "b": kd}, weights={"a": 0.7, "b": 0.3})
        >>> sorted(algo.loss(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])))
        ['distill.a.loss_kl', 'distill.b.loss_kl', 'student.loss']
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teachers: Mapping[str, nn.Module | Mapping[str, Any]],
        distillers: Mapping[str, ConfigurableDistiller | Mapping[str, Any]],
        weights: Mapping[str, float] | None = None,
        student_loss: StudentLoss | None = None,
        teacher_ckpts: Mapping[str, str | Path] | None = None,
        calculate_student_loss: bool = True,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        if not teachers:
            raise ValueError(f"{who}: teachers is empty; give at least one name -> teacher.")
        names = list(teachers)
        for what, table in (
            ("distillers", distillers),
            ("weights", weights or {}),
            ("teacher_ckpts", teacher_ckpts or {}),
        ):
            for key in table:
                if key not in teachers:
                    raise ValueError(
                        f"{who}: {what} has key {key!r} that is not a teacher name{did_you_mean(key, names) or '.'} "
                        f"Teachers: {', '.join(names)}."
                    )
        for name in names:
            if name not in distillers:
                raise ValueError(
                    f"{who}: teacher {name!r} has no entry in distillers; add distillers[{name!r}]."
                )
        self.student = build_model(student, f"{who}(student)")
        self.distillers = nn.ModuleDict(
            {name: build_distiller(distillers[name], f"{who}(distillers[{name!r}])") for name in names}
        )
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in names}
        self.student_loss = student_loss
        self.calculate_student_loss = calculate_student_loss
        self.teacher_load_reports: dict[str, dict[str, list[str]]] = {}
        for name in names:
            teacher = build_model(teachers[name], f"{who}(teachers[{name!r}])")
            if teacher_ckpts and name in teacher_ckpts:
                self.teacher_load_reports[name] = load_checkpoint(teacher, teacher_ckpts[name], who, arg=f"teacher_ckpts[{name!r}]")
            self._add_frozen(name, teacher)
            self.distillers[name].prepare_from_student(self.student)
            self.distillers[name].prepare_from_teacher(teacher)

    @property
    def teachers(self) -> dict[str, nn.Module]:
        """Name -> frozen teacher."""
        return dict(self._frozen)

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        for name, d in self.distillers.items():
            self._run(self._frozen[name], inputs, [(d, "teacher")], grad=False)
        outputs = self._run(self.student, inputs, [(d, "student") for d in self.distillers.values()])
        losses: dict[str, torch.Tensor] = {}
        if self.calculate_student_loss:
            self._add_supervised(losses, "student.loss", outputs, targets)
        for name, d in self.distillers.items():
            self._add_distill(losses, f"distill.{name}.", d, data, weight=self.weights[name])
        return losses
