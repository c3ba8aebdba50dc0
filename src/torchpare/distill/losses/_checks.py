"""Input checks shared by every distillation loss: one error type, one message format.

Every message names the loss, the argument names and both shapes, and says how to fix the mismatch,
e.g. ``KLDivergence: preds_S has shape (8, 10) but preds_T has shape (8, 100); ...``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "LossShapeError",
    "check_same_shape",
    "check_dims",
    "check_dims_match",
    "check_logits",
    "check_positive",
    "check_tensor",
]


class LossShapeError(ValueError):
    """The inputs of a distillation loss do not have shapes the loss can compare."""


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_tensor(who: str, name: str, x: object) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise a TypeError naming the loss and the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{who}: {name} must be a torch.Tensor, got {type(x).__name__}; check the recorder that "
            f"feeds {name} (a tuple output needs data_idx to pick one tensor)."
        )
    return x


def check_same_shape(
    who: str,
    s: torch.Tensor,
    t: torch.Tensor,
    names: tuple[str, str] = ("s_feature", "t_feature"),
    hint: str = "add a connector (e.g. ConvModuleConnector or LinearConnector) that maps the student "
    "to the teacher's shape",
) -> None:
    """Raise :class:`LossShapeError` unless ``s`` and ``t`` have the same shape.

    Example:
        >>> import torch
        >>> check_same_shape("L2Loss", torch.zeros(2, 3), torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        torchpare.distill.losses._checks.LossShapeError: L2Loss: s_feature has shape (2, 3) but t_feature has shape (2, 4); add a connector (e.g. ConvModuleConnector or LinearConnector) that maps the student to the teacher's shape.
    """
    check_tensor(who, names[0], s)
    check_tensor(who, names[1], t)
    if s.shape != t.shape:
        raise LossShapeError(
            f"{who}: {names[0]} has shape {_shape(s)} but {names[1]} has shape {_shape(t)}; {hint}."
        )


def check_dims(who: str, x: torch.Tensor, ndims: int | Sequence[int], name: str) -> None:
    """Raise :class:`LossShapeError` unless ``x.dim()`` is one of ``ndims``."""
    check_tensor(who, name, x)
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.dim() not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise LossShapeError(
            f"{who}: {name} must be {want}, got shape {_shape(x)}; reshape it (e.g. a TorchNNConnector "
            f"with module_name='Flatten') before the loss."
        )


def check_logits(
    who: str,
    preds_S: torch.Tensor,
    preds_T: torch.Tensor,
    ndims: int | Sequence[int] = 2,
    hint: str = "logits must have the same shape",
) -> None:
    """Raise :class:`LossShapeError` unless student and teacher logits have one shape of ``ndims`` dims.

    Example:
        >>> import torch
        >>> check_logits("DKDLoss", torch.zeros(2, 3), torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        torchpare.distill.losses._checks.LossShapeError: DKDLoss: preds_S has shape (2, 3) but preds_T has shape (2, 4); logits must have the same shape.
    """
    check_same_shape(who, preds_S, preds_T, ("preds_S", "preds_T"), hint)
    check_dims(who, preds_S, ndims, "preds_S")


def check_positive(who: str, name: str, value: float) -> None:
    """Raise ValueError unless the constructor argument ``name`` is > 0 (e.g. a temperature)."""
    if value <= 0:
        raise ValueError(f"{who}: {name} must be > 0, got {value}.")


def check_dims_match(
    who: str,
    s: torch.Tensor,
    t: torch.Tensor,
    dims: Sequence[int],
    names: tuple[str, str] = ("s_feature", "t_feature"),
    what: str = "",
    hint: str = "resize one side (e.g. TorchFunctionalConnector with function_name='interpolate')",
) -> None:
    """Raise :class:`LossShapeError` unless ``s`` and ``t`` agree on the given dims (rank must agree too)."""
    check_tensor(who, names[0], s)
    check_tensor(who, names[1], t)
    if s.dim() != t.dim() or any(s.shape[d] != t.shape[d] for d in dims):
        label = f" {what}" if what else ""
        raise LossShapeError(
            f"{who}: {names[0]} has shape {_shape(s)} but {names[1]} has shape {_shape(t)}; "
            f"they must agree on{label} dims {tuple(dims)}; {hint}."
        )
