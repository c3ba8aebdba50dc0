"""Distillation algorithms: how teachers and students run per step around a ConfigurableDistiller.

All share the engine's contract ``losses = algo.loss(inputs, targets, **extra)`` (a dict of named
scalar losses, prefixed ``student.``, ``distill.``, ``teacher.``) and ``algo.total_loss(losses)``.
"""

from torchpare.distill.algorithms.base import BaseAlgorithm, default_student_loss, forward_model, logits_of
from torchpare.distill.algorithms.data_free import (
    AdversarialDataFreeDistill,
    DAFLDataFreeDistill,
    DataFreeDistill,
)
from torchpare.distill.algorithms.multi_teacher import MultiTeacherDistill
from torchpare.distill.algorithms.ofd import OFDDistiller
from torchpare.distill.algorithms.online import OnlineDistill
from torchpare.distill.algorithms.self_distill import SelfDistill
from torchpare.distill.algorithms.single_teacher import SingleTeacherDistill

__all__ = [
    "AdversarialDataFreeDistill",
    "BaseAlgorithm",
    "DAFLDataFreeDistill",
    "DataFreeDistill",
    "MultiTeacherDistill",
    "OFDDistiller",
    "OnlineDistill",
    "SelfDistill",
    "SingleTeacherDistill",
    "default_student_loss",
    "forward_model",
    "logits_of",
]
