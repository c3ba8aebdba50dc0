"""Data-free distillation: a generator synthesises the inputs, the student learns from the teacher on them.

Two algorithms in the MMRazor 1.x style, both with the engine's one-optimiser contract
(``losses = algo.loss(inputs, targets)``; ``algo.total_loss(losses).backward()``; one step updates the
student and the generator together):

* :class:`DAFLDataFreeDistill` (DAFL, Chen et al., ICCV 2019): the generator is trained from the
  teacher alone with the one-hot, activation and information-entropy losses; the student learns by
  the distiller's losses (KD) on the generated images, detached, so the generator gets no gradient
  from the student.
* :class:`AdversarialDataFreeDistill` (DFAD, Fang et al. 2019; ZSKT, Micaelli & Storkey, NeurIPS 2019):
  the student minimises the distiller's student-teacher discrepancy on generated images and the
  generator maximises it. The generated images pass a gradient-reversal layer, so one backward gives
  the student the gradient of ``+loss`` and the generator that of ``-adversarial_weight * loss``
  (MMRazor alternates generator and student iterations with two optimisers instead).

Neither looks at the real batch: ``inputs`` and ``targets`` are ignored (under the engine the data
section only sets how many steps an epoch has); ``batch_size`` images are generated per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    build_distiller,
    build_model,
    load_checkpoint,
    logits_of,
)
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.distill.generators import build_generator
from torchpare.record import RecorderManager
from torchpare.registry import ALGORITHMS

__all__ = [
    "AdversarialDataFreeDistill",
    "DAFLDataFreeDistill",
    "DataFreeDistill",
    "activation_loss",
    "information_entropy_loss",
    "onehot_like_loss",
]


def onehot_like_loss(preds_T: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's logits against their own argmax (DAFL's one-hot loss).

    Example:
        >>> onehot_like_loss(torch.tensor([[10.0, -10.0]])).item() < 1e-6
        True
    """
    return F.cross_entropy(preds_T, preds_T.argmax(dim=1))


def information_entropy_loss(preds_T: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Minus the entropy of the batch-mean teacher softmax: low when generated classes are balanced.

    Example:
        >>> round(information_entropy_loss(torch.zeros(4, 10)).item(), 4)  # uniform: -log(10)
        -2.3026
    """
    mean_prob = F.softmax(preds_T / tau, dim=1).mean(dim=0)
    return (mean_prob * torch.log(mean_prob.clamp_min(1e-12))).sum()


def activation_loss(t_feature: torch.Tensor) -> torch.Tensor:
    """Minus the mean absolute teacher feature (DAFL: real images excite the teacher's features).

    Example:
        >>> activation_loss(torch.ones(2, 3)).item()
        -1.0
    """
    return -t_feature.abs().mean()


class _BNStatistics:
    """Context: while active, ``loss`` sums ``||mean - running_mean||_2 + ||var - running_var||_2`` over the
    inputs of every BatchNorm of ``model`` (DeepInversion's feature-statistics prior); hooks removed on exit."""

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        self.model, self.enabled = model, enabled
        self.terms: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        self.terms.append(
            torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var)
        )

    def __enter__(self) -> _BNStatistics:
        if self.enabled:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                    self._handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def loss(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


class DataFreeDistill(BaseAlgorithm):
    """What both data-free algorithms share: student, frozen teacher, generator, distiller, batch size.

    Args:
        student: The student, or a ``MODELS`` config dict.
        teacher: The trained teacher, or a ``MODELS`` config dict (frozen, eval mode).
        generator: A generator module or a ``GENERATORS`` config dict
            (:mod:`torchpare.distill.generators`); trained with the student.
        distiller: The student's losses on generated images: a :class:`ConfigurableDistiller` or its
            config dict (recorders on both sides, e.g. a ``KLDivergence`` on the logits).
        batch_size: Images generated per step.
        teacher_ckpt: Weights loaded into the teacher (``weights_only=True`` or ``.safetensors``).

    Raises:
        ValueError: ``batch_size`` < 1.
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teacher: nn.Module | Mapping[str, Any],
        generator: nn.Module | Mapping[str, Any],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        batch_size: int = 64,
        teacher_ckpt: str | Path | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"{who}(batch_size={batch_size!r}): must be a positive integer.")
        self.student = build_model(student, f"{who}(student)")
        teacher = build_model(teacher, f"{who}(teacher)")
        self.generator = build_generator(generator, f"{who}(generator)")
        self.distiller = build_distiller(distiller, who)
        self.batch_size = batch_size
        self.student_loss = None
        self.teacher_load_report: dict[str, list[str]] | None = None
        if teacher_ckpt is not None:
            self.teacher_load_report = load_checkpoint(teacher, teacher_ckpt, who)
        self._add_frozen("teacher", teacher)
        self.distiller.prepare_from_student(self.student)
        self.distiller.prepare_from_teacher(teacher)
        self.train(self.training)

    @torch.no_grad()
    def generate(self, batch_size: int | None = None) -> torch.Tensor:
        """A batch of generated images (no gradient), e.g. to look at them.

        Example:
            >>> algo = _example_algorithm()
            >>> algo.generate(2).shape
            torch.Size([2, 1, 8, 8])
        """
        return self.generator(batch_size=batch_size or self.batch_size)


@ALGORITHMS.register(aliases=("DAFL", "DAFLDataFreeDistillation"))
class DAFLDataFreeDistill(DataFreeDistill):
    """DAFL: the generator learns from the teacher alone; the student distils on its images.

    Per step: ``x = generator(batch_size)``; the teacher runs on ``x`` (its recorders on, gradients to
    the generator through the frozen teacher) and gives the generator losses
    ``generator.loss_onehot`` (cross-entropy against the teacher's own argmax),
    ``generator.loss_activation`` (minus the mean absolute feature at ``activation_source``'s input)
    and ``generator.loss_entropy`` (minus the entropy of the batch-mean class distribution); the
    student runs on ``x.detach()`` and the distiller gives ``distill.loss_<name>``.

    Args:
        student, teacher, generator, distiller, batch_size, teacher_ckpt: See :class:`DataFreeDistill`.
        onehot_weight: Weight of ``generator.loss_onehot`` (paper: 1).
        activation_weight: Weight of ``generator.loss_activation`` (paper: 0.1).
        entropy_weight: Weight of ``generator.loss_entropy`` (paper: 5).
        activation_source: Teacher module whose *input* is the feature of the activation loss (the
            classifier, e.g. ``"fc"``); ``None`` (or weight 0) drops the loss.
        tau: Temperature of the softmax in the entropy loss.
        bn_weight: Weight of ``generator.loss_bn``, DeepInversion's batch-norm statistics prior (not
            in DAFL): the sum over the teacher's BatchNorms of ``||mean - running_mean|| + ||var -
            running_var||`` of their inputs on the generated batch. 0 (default) leaves it out. On
            digits DAFL's three losses alone let the generator collapse onto one class the teacher is
            saturated on; with ``bn_weight=1`` it does not (docs/benchmarks.md).

    Raises:
        AttributeError: ``activation_source`` is not a module of the teacher.

    Example:
        >>> algo = _example_algorithm()
        >>> losses = algo.loss(None)
        >>> sorted(losses)
        ['distill.loss_kl', 'generator.loss_activation', 'generator.loss_entropy', 'generator.loss_onehot']
        >>> algo.total_loss(losses).backward()
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teacher: nn.Module | Mapping[str, Any],
        generator: nn.Module | Mapping[str, Any],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        batch_size: int = 64,
        teacher_ckpt: str | Path | None = None,
        onehot_weight: float = 1.0,
        activation_weight: float = 0.1,
        entropy_weight: float = 5.0,
        activation_source: str | None = "fc",
        tau: float = 1.0,
        bn_weight: float = 0.0,
    ) -> None:
        super().__init__(student, teacher, generator, distiller, batch_size, teacher_ckpt)
        self.onehot_weight = float(onehot_weight)
        self.activation_weight = float(activation_weight)
        self.entropy_weight = float(entropy_weight)
        self.tau = float(tau)
        self.bn_weight = float(bn_weight)
        self.activation_source = activation_source if activation_weight else None
        specs = {} if self.activation_source is None else {
            "feature": {"type": "ModuleInputs", "source": self.activation_source}
        }
        self.__dict__["_feature_recorder"] = RecorderManager(specs)
        self._feature_recorder.initialize(self.teacher)

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        d = self.distiller
        losses: dict[str, torch.Tensor] = {}
        fake = self.generator(batch_size=self.batch_size)
        with self._feature_recorder, _BNStatistics(self.teacher, bool(self.bn_weight)) as bn_stats:
            teacher_out = self._run(self.teacher, fake, [(d, "teacher")])
            preds_T = logits_of(teacher_out)
            if self.onehot_weight:
                losses["generator.loss_onehot"] = self.onehot_weight * onehot_like_loss(preds_T)
            if self.activation_source is not None:
                feature = self._feature_recorder.get_recorder("feature").get_record_data(data_idx=0)
                losses["generator.loss_activation"] = self.activation_weight * activation_loss(feature)
            if self.entropy_weight:
                losses["generator.loss_entropy"] = self.entropy_weight * information_entropy_loss(preds_T, self.tau)
            if self.bn_weight and bn_stats.terms:
                losses["generator.loss_bn"] = self.bn_weight * bn_stats.loss()
        self._run(self.student, fake.detach(), [(d, "student")])
        self._add_distill(losses, "distill.", d, {}, detach_teacher=True)
        return losses


@ALGORITHMS.register(aliases=("DFAD", "ZSKT", "DataFreeDistillation"))
class AdversarialDataFreeDistill(DataFreeDistill):
    """DFAD / ZSKT: the generator maximises the student-teacher discrepancy the student minimises.

    Per step: ``x = generator(batch_size)`` goes through a gradient-reversal layer (scale
    ``adversarial_weight``) and then through the teacher and the student with their recorders on;
    the distiller's losses (``distill.loss_<name>``, e.g. an ``L1Loss`` on the logits as in DFAD)
    train the student down and the generator up in the same backward. Teacher-side recordings are
    not detached by the algorithm, so a loss with ``teacher_detach=False`` also sends the generator
    the teacher path's gradient.

    Args:
        student, teacher, generator, distiller, batch_size, teacher_ckpt: See :class:`DataFreeDistill`.
        adversarial_weight: Scale of the reversed gradient the generator gets.

    Example:
        >>> algo = _example_algorithm(AdversarialDataFreeDistill)
        >>> losses = algo.loss(None)
        >>> sorted(losses)
        ['distill.loss_kl']
        >>> algo.total_loss(losses).backward()
    """

    def __init__(
        self,
        student: nn.Module | Mapping[str, Any],
        teacher: nn.Module | Mapping[str, Any],
        generator: nn.Module | Mapping[str, Any],
        distiller: ConfigurableDistiller | Mapping[str, Any],
        batch_size: int = 64,
        teacher_ckpt: str | Path | None = None,
        adversarial_weight: float = 1.0,
    ) -> None:
        super().__init__(student, teacher, generator, distiller, batch_size, teacher_ckpt)
        self.adversarial_weight = float(adversarial_weight)

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        d = self.distiller
        losses: dict[str, torch.Tensor] = {}
        fake = _GradReverse.apply(self.generator(batch_size=self.batch_size), self.adversarial_weight)
        self._run(self.teacher, fake, [(d, "teacher")])
        self._run(self.student, fake, [(d, "student")])
        self._add_distill(losses, "distill.", d, {})
        return losses


def _example_algorithm(cls: type[DataFreeDistill] = DAFLDataFreeDistill) -> DataFreeDistill:
    """A tiny digits set-up for the docstring examples."""
    from torchpare.zoo import DigitsCNN, DigitsMLP

    return cls(
        DigitsMLP(), DigitsCNN(width=4),
        {"type": "DAFLGenerator", "img_size": 8, "latent_dim": 8, "hidden_channels": 8},
        {"student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc2"}},
         "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
         "distill_losses": {"kl": {"type": "KLDivergence", "tau": 4}},
         "loss_forward_mappings": {"kl": {
             "preds_S": {"from_student": True, "recorder": "logits"},
             "preds_T": {"from_student": False, "recorder": "logits"}}}},
        batch_size=4,
    )

