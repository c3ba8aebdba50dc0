"""SingleTeacherDistill: one teacher, one student, one ConfigurableDistiller."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    StudentLoss,
    build_distiller,
    build_model,
    load_checkpoint,
    norms_eval,
)
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.registry import ALGORITHMS

__all__ = ["SingleTeacherDistill"]


@ALGORITHMS.register(aliases=("SingleTeacher", "KD"))
class SingleTeacherDistill(BaseAlgorithm):
    """Distil one teacher into one student.

    Per step the teacher runs first (recorders on, deliveries recording), then the student (recorders
    on, deliveries replaying the teacher's outputs); then the distiller computes its losses.
    :meth:`loss` returns ``student.loss``, ``distill.loss_<name>`` per distillation loss and, with a
    trainable teacher, ``teacher.loss`` (supervised entries only when they can be computed).

    Args:
        student: The student, or a ``MODELS`` config dict.
        teacher: The teacher, or a ``MODELS`` config dict.
        distiller: A :class:`ConfigurableDistiller` or its config dict (``type`` optional).
        student_loss: ``(outputs, targets) -> tensor``; default cross-entropy on the logits with
            ``-100`` as "unlabelled". Ignored when the student returns its own ``loss`` (Hugging Face
            models given ``labels``).
        teacher_ckpt: Weights loaded into the teacher (``weights_only=True`` or ``.safetensors``);
            missing/unexpected keys are warned about and kept in ``teacher_load_report``.
        teacher_trainable: Train the teacher too (its supervised loss appears as ``teacher.loss``).
        teacher_norm_eval: With a trainable teacher, keep its norm layers in eval mode.
        student_trainable: ``False`` freezes the student's parameters (connectors still train).
        calculate_student_loss: Add the student's supervised loss (``student.loss``).

    A frozen teacher runs under ``torch.no_grad()`` in eval mode, stays in eval mode under
    ``algo.train()``, and is not in ``algo.parameters()`` or ``algo.state_dict()``.

    Example:
        >>> import torch
        >>> from torchpare.zoo import DigitsMLP, DigitsSmallCNN
        >>> algo = SingleTeacherDistill(
        ...     DigitsMLP(), DigitsSmallCNN(),
        ...     {"student_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc2"}},
        ...      "teacher_recorders": {"fc": {"type": "ModuleOutputs", "source": "fc"}},
        ...      "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4}},
        ...      "loss_forward_mappings": {"kl": {
        ...          "preds_S": {"from_student": True, "recorder": "fc"},
        ...          "preds_T": {"from_student": False, "recorder": "fc"}}}})
        >>> losses = algo.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> sorted(losses)
        ['distill.loss_kl', 'student.loss']
        >>> algo.total_loss(losses).backward()
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teacher: nn.Module | Mapping[str, Any],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        student_loss: StudentLoss | None = None,
        teacher_ckpt: str | Path | None = None,
        teacher_trainable: bool = False,
        teacher_norm_eval: bool = True,
        student_trainable: bool = True,
        calculate_student_loss: bool = True,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        self.student = build_model(student, f"{who}(student)")
        teacher = build_model(teacher, f"{who}(teacher)")
        self.distiller = build_distiller(distiller, who)
        self.student_loss = student_loss
        self.teacher_trainable = teacher_trainable
        self.teacher_norm_eval = teacher_norm_eval
        self.student_trainable = student_trainable
        self.calculate_student_loss = calculate_student_loss
        self.teacher_load_report: dict[str, list[str]] | None = None
        if teacher_ckpt is not None:
            self.teacher_load_report = load_checkpoint(teacher, teacher_ckpt, who)
        if teacher_trainable:
            self.teacher = teacher
        else:
            self._add_frozen("teacher", teacher)
        if not student_trainable:
            self.student.requires_grad_(False)
        self.distiller.prepare_from_student(self.student)
        self.distiller.prepare_from_teacher(teacher)
        self.train(self.training)

    def train(self, mode: bool = True) -> SingleTeacherDistill:
        """Set train/eval mode; a frozen teacher stays in eval, a trainable one keeps norms in eval if asked."""
        super().train(mode)
        if self.teacher_trainable and self.teacher_norm_eval:
            norms_eval(self.teacher)
        return self

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        d = self.distiller
        losses: dict[str, torch.Tensor] = {}
        teacher_out = self._run(self.teacher, inputs, [(d, "teacher")], grad=self.teacher_trainable)
        if self.teacher_trainable:
            self._add_supervised(losses, "teacher.loss", teacher_out, targets)
        student_out = self._run(self.student, inputs, [(d, "student")])
        if self.calculate_student_loss:
            self._add_supervised(losses, "student.loss", student_out, targets)
        self._add_distill(losses, "distill.", d, data)
        return losses
