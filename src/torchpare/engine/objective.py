"""The loss interface the trainer drives, and its plain-supervised implementation.

Anything with ``loss(inputs, targets, **extra) -> dict[str, Tensor]`` (and optionally
``total_loss(losses)`` and ``trainable_parameters()``) can be trained: every algorithm of
``torchpare.distill`` and :class:`SupervisedObjective` (a model plus a loss function).

``logits_of`` and ``masked_cross_entropy`` live in :mod:`torchpare.model_io` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from torchpare.model_io import call_model, logits_of, masked_cross_entropy

__all__ = ["SupervisedObjective", "masked_cross_entropy", "logits_of", "eval_model_of", "total_loss_of"]


class SupervisedObjective(nn.Module):
    """A model and a loss function behind the trainer's loss interface.

    Args:
        model: Any module mapping inputs to logits (or an output :func:`logits_of` understands).
        loss_fn: ``loss_fn(logits, targets) -> Tensor``; default :func:`masked_cross_entropy`.

    Example:
        >>> import torch
        >>> obj = SupervisedObjective(torch.nn.Linear(3, 2))
        >>> sorted(obj.loss(torch.ones(4, 3), torch.tensor([0, 1, 0, 1])))
        ['loss_ce']
    """

    def __init__(
        self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    ):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn or masked_cross_entropy

    def loss(self, inputs: Any, targets: torch.Tensor, **extra: Any) -> dict[str, torch.Tensor]:
        """``{"loss_ce": loss_fn(model(inputs), targets)}``; ``extra`` is ignored."""
        return {"loss_ce": self.loss_fn(logits_of(call_model(self.model, inputs)), targets)}

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(losses.values())  # type: ignore[return-value]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def forward(self, inputs: Any) -> Any:
        return call_model(self.model, inputs)


def eval_model_of(objective: nn.Module) -> nn.Module:
    """The model to evaluate: ``objective.student`` or ``objective.model`` when present, else itself."""
    for name in ("student", "model"):
        sub = getattr(objective, name, None)
        if isinstance(sub, nn.Module):
            return sub
    return objective


def total_loss_of(objective: Any, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """``objective.total_loss(losses)`` when defined, else the sum of the loss values."""
    if hasattr(objective, "total_loss"):
        return objective.total_loss(losses)
    return sum(losses.values())  # type: ignore[return-value]
