"""SelfDistill: one model teaches itself (deep supervision, e.g. the last stage teaching earlier ones)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    StudentLoss,
    build_distiller,
    build_model,
)
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.registry import ALGORITHMS

__all__ = ["SelfDistill"]


@ALGORITHMS.register(aliases=("Self",))
class SelfDistill(BaseAlgorithm):
    """Distil a model into itself: student and teacher recorders both sit on ``model``.

    One forward fills both sides. The "teacher" side (e.g. the final logits or the deepest feature)
    is detached by default, so it teaches the shallower outputs without being pulled towards them;
    connectors on either side (e.g. auxiliary heads on early stages) train with the model.
    :meth:`loss` returns ``student.loss`` and ``distill.loss_<name>`` per distillation loss.

    Args:
        model: The model, or a ``MODELS`` config dict.
        distiller: A :class:`ConfigurableDistiller` (or config dict) whose student and teacher recorders
            both name modules of ``model``. Deliveries are not supported (there is one forward).
        student_loss: ``(outputs, targets) -> tensor``; default cross-entropy (``-100`` ignored).
        calculate_student_loss: Add the supervised loss as ``student.loss``.
        detach_teacher: Detach teacher-side recordings before the connectors and losses.

    Raises:
        ValueError: the distiller has deliveries.

    Example:
        >>> import torch
        >>> from torchpare.zoo import DigitsSmallCNN
        >>> from torchpare.distill.connectors import ConvModuleConnector
        >>> algo = SelfDistill(DigitsSmallCNN(width=4), {
        ...     "student_recorders": {"l2": {"type": "ModuleOutputs", "source": "layer2"}},
        ...     "teacher_recorders": {"l3": {"type": "ModuleOutputs", "source": "layer3"}},
        ...     "distill_losses": {"mse": {"type": "MSELoss"}},
        ...     "loss_forward_mappings": {"mse": {
        ...         "s_feature": {"from_student": True, "recorder": "l2"},
        ...         "t_feature": {"from_student": False, "recorder": "l3"}}}})
        >>> sorted(algo.loss(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])))
        ['distill.loss_mse', 'student.loss']
    """

    def __init__(
        self,
        model: nn.Module | Mapping[str, Any],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        student_loss: StudentLoss | None = None,
        calculate_student_loss: bool = True,
        detach_teacher: bool = True,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        self.student = build_model(model, f"{who}(model)")
        self.distiller = build_distiller(distiller, who)
        if self.distiller.has_deliveries:
            raise ValueError(
                f"{who}: the distiller has distill_deliveries, but self-distillation runs one forward; "
                f"remove distill_deliveries."
            )
        self.student_loss = student_loss
        self.calculate_student_loss = calculate_student_loss
        self.detach_teacher = detach_teacher
        self.distiller.prepare_from_student(self.student)
        self.distiller.prepare_from_teacher(self.student)

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        d = self.distiller
        outputs = self._run(self.student, inputs, [(d, "student"), (d, "teacher")])
        losses: dict[str, torch.Tensor] = {}
        if self.calculate_student_loss:
            self._add_supervised(losses, "student.loss", outputs, targets)
        self._add_distill(losses, "distill.", d, data, detach_teacher=self.detach_teacher)
        return losses
