"""Per-loss schedules of a ConfigurableDistiller: weight warm-up/decay, stop, detach (MMRazor's hooks).

``ConfigurableDistiller(..., loss_schedules={loss_name: spec})`` with ``spec`` a dict of

* ``weight``: a factor multiplying the loss (on top of its own ``loss_weight``):
  ``{"type": "constant", "value": 1.0}``,
  ``{"type": "linear", "warmup_epochs": 20, "start": 0.0}`` (``start`` -> 1 linearly; DKD's warm-up is
  ``linear`` from 0 over 20 epochs), ``{"type": "cosine", "warmup_steps": 100, "start": 0.0}`` (a
  half-cosine ramp ``start`` -> 1), ``{"type": "step", "milestones": [30, 60], "gamma": 0.1, "by":
  "epoch"}`` (times ``gamma`` at each milestone passed);
* ``stop_epoch`` / ``stop_step``: from then on the loss is neither computed nor returned (MMRazor's
  ``StopDistillHook``);
* ``detach_epoch`` / ``detach_step``: from then on the loss is returned detached, logged but not
  trained on (MMRazor's ``DistillationLossDetachHook``).

Progress is counted in optimiser steps: every :meth:`LossSchedules.apply` in training mode is one
step and advances the counter afterwards (the counter is a buffer, so checkpoints and ``--resume``
keep it). Epoch settings need ``steps_per_epoch`` (the engine sets it; in Python pass it in the
distiller's ``loss_schedules`` as ``{"steps_per_epoch": N, loss_name: spec}`` or call
:meth:`LossSchedules.set_steps_per_epoch`); step ``s`` is in epoch ``s // steps_per_epoch``.

Example:
    >>> import torch
    >>> sched = LossSchedules({"kd": {"weight": {"type": "linear", "warmup_steps": 4}, "stop_step": 6}},
    ...                       ["kd"])
    >>> [round(sched.apply({"loss_kd": torch.tensor(1.0)}).get("loss_kd", torch.tensor(-1.0)).item(), 2)
    ...  for _ in range(7)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, -1.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchpare._utils import did_you_mean

__all__ = ["LossSchedules", "LossScheduleError", "WEIGHT_SCHEDULES", "loss_key", "weight_factor"]

WEIGHT_SCHEDULES = ("constant", "linear", "cosine", "step")
_SPEC_KEYS = ("weight", "stop_epoch", "stop_step", "detach_epoch", "detach_step")
_WEIGHT_KEYS = {
    "constant": ("type", "value"),
    "linear": ("type", "start", "warmup_epochs", "warmup_steps"),
    "cosine": ("type", "start", "warmup_epochs", "warmup_steps"),
    "step": ("type", "milestones", "gamma", "by"),
}


def loss_key(name: str) -> str:
    """The key of loss ``name`` in :meth:`ConfigurableDistiller.compute_distill_losses` (and so in
    :meth:`LossSchedules.apply`): ``"loss_" + name``, not prefixed twice for MMRazor names.

    Example:
        >>> loss_key("kd"), loss_key("loss_kl")
        ('loss_kd', 'loss_kl')
    """
    return name if name.startswith("loss_") else f"loss_{name}"


class LossScheduleError(ValueError):
    """A ``loss_schedules`` entry is invalid (the message names the loss and key)."""


def weight_factor(spec: Mapping[str, Any], step: int, steps_per_epoch: int | None) -> float:
    """The weight factor of a ``weight`` spec at optimiser step ``step`` (0-based).

    Example:
        >>> round(weight_factor({"type": "cosine", "warmup_steps": 2}, 1, None), 6)
        0.5
        >>> round(weight_factor({"type": "step", "milestones": [1, 2], "gamma": 0.1, "by": "epoch"}, 25, 10), 6)
        0.01
    """
    kind = spec.get("type", "constant")
    if kind == "constant":
        return float(spec.get("value", 1.0))
    if kind in ("linear", "cosine"):
        warmup = _in_steps(spec, "warmup", steps_per_epoch)
        start = float(spec.get("start", 0.0))
        t = 1.0 if warmup <= 0 else min(1.0, step / warmup)
        ramp = t if kind == "linear" else 0.5 * (1.0 - math.cos(math.pi * t))
        return start + (1.0 - start) * ramp
    by_epoch = spec.get("by", "epoch") == "epoch"
    now = step // steps_per_epoch if by_epoch and steps_per_epoch else step
    passed = sum(1 for m in spec.get("milestones", []) if now >= m)
    return float(spec.get("gamma", 0.1)) ** passed


def _in_steps(spec: Mapping[str, Any], key: str, steps_per_epoch: int | None) -> int:
    if spec.get(f"{key}_steps") is not None:
        return int(spec[f"{key}_steps"])
    if spec.get(f"{key}_epochs") is not None:
        return int(spec[f"{key}_epochs"]) * int(steps_per_epoch or 0)
    return 0


def _needs_epochs(spec: Mapping[str, Any]) -> bool:
    weight = spec.get("weight") or {}
    return (
        any(spec.get(k) is not None for k in ("stop_epoch", "detach_epoch"))
        or weight.get("warmup_epochs") is not None
        or (weight.get("type") == "step" and weight.get("by", "epoch") == "epoch")
    )


def _check(name: str, spec: Any, losses: Sequence[str]) -> dict[str, Any]:
    where = f"ConfigurableDistiller: loss_schedules[{name!r}]"
    if name not in losses:
        raise LossScheduleError(
            f"ConfigurableDistiller: loss_schedules names loss {name!r}, which is not in distill_losses"
            f"{did_you_mean(name, list(losses)) or '.'} Valid losses: {', '.join(losses) or '(none)'}."
        )
    if not isinstance(spec, Mapping):
        raise LossScheduleError(f"{where}: must be a dict with keys {', '.join(_SPEC_KEYS)}, got {spec!r}.")
    for key, value in spec.items():
        if key not in _SPEC_KEYS:
            raise LossScheduleError(
                f"{where}: unknown key {key!r}{did_you_mean(key, _SPEC_KEYS) or '.'} Valid: {', '.join(_SPEC_KEYS)}."
            )
        if key != "weight" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise LossScheduleError(f"{where}.{key}: must be an integer >= 0, got {value!r}.")
    for what in ("stop", "detach"):
        if spec.get(f"{what}_epoch") is not None and spec.get(f"{what}_step") is not None:
            raise LossScheduleError(f"{where}: give {what}_epoch or {what}_step, not both.")
    weight = spec.get("weight")
    if weight is None:
        return dict(spec)
    if isinstance(weight, int | float) and not isinstance(weight, bool):
        return {**spec, "weight": {"type": "constant", "value": float(weight)}}
    if not isinstance(weight, Mapping):
        raise LossScheduleError(f"{where}.weight: must be a number or a dict with a 'type', got {weight!r}.")
    kind = weight.get("type", "constant")
    if kind not in WEIGHT_SCHEDULES:
        raise LossScheduleError(
            f"{where}.weight.type: unknown schedule {kind!r}{did_you_mean(str(kind), WEIGHT_SCHEDULES) or '.'} "
            f"Use one of {', '.join(WEIGHT_SCHEDULES)}."
        )
    for key in weight:
        if key not in _WEIGHT_KEYS[kind]:
            raise LossScheduleError(
                f"{where}.weight: {kind!r} takes {', '.join(_WEIGHT_KEYS[kind])}, not {key!r}."
            )
    if kind in ("linear", "cosine") and (weight.get("warmup_epochs") is None) == (weight.get("warmup_steps") is None):
        raise LossScheduleError(f"{where}.weight: {kind!r} needs exactly one of warmup_epochs, warmup_steps.")
    if kind == "step":
        milestones = weight.get("milestones")
        if not isinstance(milestones, list) or not all(isinstance(m, int) and m >= 0 for m in milestones):
            raise LossScheduleError(f"{where}.weight.milestones: must be a list of integers >= 0, got {milestones!r}.")
        if weight.get("by", "epoch") not in ("epoch", "step"):
            raise LossScheduleError(f"{where}.weight.by: must be 'epoch' or 'step', got {weight.get('by')!r}.")
    return {**spec, "weight": dict(weight)}


class LossSchedules(nn.Module):
    """The ``loss_schedules`` of a distiller: scales, stops and detaches its losses step by step.

    Args:
        specs: ``{loss_name: spec}`` (see the module docstring), optionally with ``steps_per_epoch``.
        losses: The distiller's loss names (for validation).

    Raises:
        LossScheduleError: (a ValueError) an unknown loss, key or schedule type, or a bad value.
    """

    def __init__(self, specs: Mapping[str, Any], losses: Sequence[str]) -> None:
        super().__init__()
        specs = dict(specs)
        spe = specs.pop("steps_per_epoch", None)
        self.specs = {name: _check(name, spec, losses) for name, spec in specs.items()}
        self.steps_per_epoch: int | None = None
        if spe is not None:
            self.set_steps_per_epoch(spe)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def set_steps_per_epoch(self, steps_per_epoch: int) -> None:
        """How many optimiser steps an epoch has (needed by ``*_epoch`` settings)."""
        if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
            raise LossScheduleError(f"LossSchedules: steps_per_epoch must be a positive integer, got {steps_per_epoch!r}.")
        self.steps_per_epoch = steps_per_epoch

    def _at(self, spec: Mapping[str, Any], what: str, step: int) -> bool:
        if spec.get(f"{what}_step") is not None:
            return step >= spec[f"{what}_step"]
        if spec.get(f"{what}_epoch") is not None:
            return step >= spec[f"{what}_epoch"] * int(self.steps_per_epoch or 0)
        return False

    def stopped(self, name: str) -> bool:
        """Whether loss ``name`` is past its stop point at the current step (it is then not computed)."""
        spec = self.specs.get(name)
        return spec is not None and self._at(spec, "stop", int(self.step))

    def apply(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``losses`` (``"loss_<name>"`` or ``"loss_<name>.<key>"``) scaled, stopped and detached as scheduled.

        In training mode the step counter advances by one afterwards.

        Raises:
            LossScheduleError: an epoch setting without ``steps_per_epoch``.
        """
        step = int(self.step)
        out: dict[str, torch.Tensor] = {}
        names = {loss_key(n): n for n in self.specs}
        for key, value in losses.items():
            name = names.get(key.split(".", 1)[0], key)
            spec = self.specs.get(name)
            if spec is None:
                out[key] = value
                continue
            if self.steps_per_epoch is None and _needs_epochs(spec):
                raise LossScheduleError(
                    f"ConfigurableDistiller: loss_schedules[{name!r}] counts in epochs but steps_per_epoch is "
                    f"unknown; add 'steps_per_epoch': N to loss_schedules or call "
                    f"distiller.loss_schedules.set_steps_per_epoch(N) (the engine does it)."
                )
            if self._at(spec, "stop", step):
                continue
            if spec.get("weight") is not None:
                value = value * weight_factor(spec["weight"], step, self.steps_per_epoch)
            if self._at(spec, "detach", step):
                value = value.detach()
            out[key] = value
        if self.training:
            self.step += 1
        return out

    def extra_repr(self) -> str:
        return f"losses={list(self.specs)}, steps_per_epoch={self.steps_per_epoch}"
