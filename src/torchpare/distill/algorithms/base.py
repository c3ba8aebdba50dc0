"""Shared pieces of the distillation algorithms: calling models, student losses, frozen models.

Every algorithm is an ``nn.Module`` with the same two-call training contract, used by the engine::

    losses = algo.loss(inputs, targets, **extra)   # dict name -> scalar tensor
    algo.total_loss(losses).backward()

``inputs`` is a tensor (``model(x)``), a tuple/list (``model(*x)``) or a dict (``model(**x)``, e.g. a
Hugging Face batch). ``targets`` may be ``None``. ``extra`` holds further batch values such as
``indices`` (CRD) that loss mappings read with ``{"from_data": key}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.model_io import call_model, load_state_dict_file, logits_of, masked_cross_entropy
from torchpare.registry import DISTILLERS, MODELS

__all__ = [
    "BaseAlgorithm",
    "StudentLoss",
    "default_student_loss",
    "forward_model",
    "logits_of",
    "load_checkpoint",
    "build_model",
    "build_distiller",
]

StudentLoss = Callable[[Any, torch.Tensor], torch.Tensor]
Side = Literal["student", "teacher"]
_NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def forward_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on a tensor, a tuple/list of positional inputs, or a dict of keyword inputs.

    The same as :func:`torchpare.model_io.call_model` (kept under this name for users).
    """
    return call_model(model, inputs)


def _own_loss(outputs: Any) -> torch.Tensor | None:
    """The loss a model computed itself (Hugging Face models given ``labels``), else ``None``."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


def default_student_loss(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the logits; negative targets (``-100``) are unlabelled and ignored.

    :func:`torchpare.model_io.masked_cross_entropy` on :func:`torchpare.model_io.logits_of` ``(outputs)``.
    A batch with no labelled sample gives a zero that still depends on the logits (so ``backward``
    works), instead of the NaN that ``F.cross_entropy`` returns.

    Example:
        >>> import torch
        >>> default_student_loss(torch.zeros(2, 3), torch.tensor([-100, -100])).item()
        0.0
    """
    return masked_cross_entropy(logits_of(outputs), targets)


def build_model(spec: nn.Module | Mapping[str, Any], who: str) -> nn.Module:
    """A module given as such or as a ``MODELS`` config dict."""
    model = MODELS.build(spec)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: expected an nn.Module or a MODELS config dict, got {type(model).__name__}.")
    return model


def build_distiller(spec: ConfigurableDistiller | Mapping[str, Any], who: str) -> ConfigurableDistiller:
    """A distiller given as such or as a config dict (``type`` defaults to ``ConfigurableDistiller``)."""
    if isinstance(spec, Mapping):
        spec = dict(spec)
        spec.setdefault("type", "ConfigurableDistiller")
        spec = DISTILLERS.build(spec)
    if not isinstance(spec, ConfigurableDistiller):
        raise TypeError(
            f"{who}: distiller must be a ConfigurableDistiller or a config dict, got {type(spec).__name__}."
        )
    return spec


def load_checkpoint(
    model: nn.Module, path: str | Path | Mapping[str, Any], who: str, arg: str = "teacher_ckpt"
) -> dict[str, list[str]]:
    """Load a teacher checkpoint into ``model`` with :func:`torchpare.model_io.load_state_dict_file`.

    A dict wrapping the weights under ``"state_dict"`` or ``"model"`` is unwrapped and a ``module.``
    prefix (``DistributedDataParallel``) is removed. Shapes are compared before loading. By default the
    file must fill every parameter and buffer of ``model`` and hold nothing else; give
    ``{"path": ..., "strict": False}`` to load what matches (missing and unexpected keys are then
    warned about and returned).

    Args:
        model: The module to load into (in place).
        path: The checkpoint file, or ``{"path": file, "strict": bool}``.
        who: The caller, e.g. the algorithm's class name (starts every message).
        arg: The argument ``path`` came from (``teacher_ckpt``, ``teacher_ckpts['a']``), for messages.

    Returns:
        ``{"missing_keys": [...], "unexpected_keys": [...]}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: (:class:`~torchpare.model_io.StateDictFileError`) ``path`` is not a state dict, a
            tensor's shape differs from the model's (the first one is named with both shapes), or
            (strict) keys are missing or unexpected (the first ones are named).
        TypeError: ``{"path": ..., "strict": ...}`` with other keys or a non-bool ``strict``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save(nn.Linear(2, 4).state_dict(), f"{tmp}/t.pt")
        ...     load_checkpoint(nn.Linear(2, 4), f"{tmp}/t.pt", "Algo")
        {'missing_keys': [], 'unexpected_keys': []}
    """
    strict = True
    if isinstance(path, Mapping):
        spec = dict(path)
        extra = sorted(set(spec) - {"path", "strict"})
        if extra or "path" not in spec or not isinstance(spec.get("strict", True), bool):
            raise TypeError(
                f"{who}({arg}): a checkpoint given as a dict takes 'path' and an optional bool 'strict', "
                f"got {spec!r}."
            )
        path, strict = spec["path"], spec.get("strict", True)
    return load_state_dict_file(
        model,
        path,
        f"{who}({arg})",
        strict=strict,
        fix="build the teacher with the arguments (width, hidden, ...) it was trained with",
    )


def freeze(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter and switch to eval mode (in place)."""
    model.requires_grad_(False)
    return model.eval()


def norms_eval(model: nn.Module) -> None:
    """Put every normalisation layer of ``model`` in eval mode (BN running stats stop moving)."""
    for m in model.modules():
        if isinstance(m, _NORMS):
            m.eval()


class BaseAlgorithm(nn.Module):
    """Common behaviour: the engine's :meth:`loss` entry point, frozen models, student forward.

    Frozen models (teachers that do not train) are held in ``self._frozen`` instead of as submodules,
    so the optimiser and checkpoints see only what trains; ``_apply`` (used by ``.to()``, ``.cuda()``,
    ``.half()``) still reaches them, and ``train()`` keeps them in eval mode.

    A subclass sets ``student`` (what :meth:`forward` runs), ``student_loss`` (``None`` for the
    default cross-entropy) and implements ``_losses(inputs, targets, data)``, which :meth:`loss` calls
    with the batch values for ``{"from_data": key}`` gathered in ``data``; :meth:`_run`,
    :meth:`_add_supervised` and :meth:`_add_distill` are its building blocks.
    """

    student: nn.Module
    student_loss: StudentLoss | None

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["_frozen"] = {}

    def _add_frozen(self, name: str, model: nn.Module) -> None:
        self._frozen[name] = freeze(model)

    def __getattr__(self, name: str) -> Any:
        # a frozen teacher reads as ``algo.teacher`` like a submodule would (single-teacher algorithms)
        if name == "teacher" and "teacher" in self.__dict__.get("_frozen", {}):
            return self._frozen["teacher"]
        return super().__getattr__(name)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> BaseAlgorithm:  # type: ignore[override]
        super()._apply(fn, recurse)
        for model in self._frozen.values():
            model._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> BaseAlgorithm:
        """Set train/eval mode; frozen models stay in eval mode whatever ``mode`` is."""
        super().train(mode)
        for model in self._frozen.values():
            model.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that require gradients (the optimiser's list)."""
        return (p for p in self.parameters() if p.requires_grad)

    @staticmethod
    def total_loss(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sum of all losses returned by :meth:`loss` (they carry their weights already).

        Raises:
            ValueError: ``losses`` is empty.
        """
        if not losses:
            raise ValueError("total_loss(): no losses to sum; the algorithm returned an empty dict.")
        values = list(losses.values())
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total

    def loss(
        self,
        inputs: Any,
        targets: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        **extra: Any,
    ) -> dict[str, torch.Tensor]:
        """Run the models on ``inputs`` and return all losses (the class docstring lists their names).

        Args:
            inputs: Tensor, tuple/list (positional) or dict (keyword) model inputs.
            targets: Labels for the supervised losses (and ``{"from_data": "targets"}``), or ``None``.
            indices: Sample indices for ``{"from_data": "indices"}`` (CRD).
            **extra: Further values readable with ``{"from_data": key}``.

        Returns:
            Name -> scalar loss, named ``student...``, ``teacher...`` or ``distill...``; a supervised
            entry appears only when it can be computed (``targets`` given, or the model returns its
            own ``loss``).
        """
        data = {"targets": targets, "indices": indices, **extra}
        return self._losses(inputs, targets, {k: v for k, v in data.items() if v is not None})

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _losses(inputs, targets, data).")

    def forward(self, inputs: Any) -> Any:
        """The student's output (inference uses the student only)."""
        return call_model(self.student, inputs)

    @staticmethod
    def _run(
        model: nn.Module,
        inputs: Any,
        sides: Iterable[tuple[ConfigurableDistiller, Side]],
        grad: bool = True,
    ) -> Any:
        """``model`` on ``inputs`` inside ``d.recording(side)`` of each distiller.

        Deliveries record on the teacher side (whose entry starts the step and empties their queues)
        and replay the recorded outputs on the student side.
        """
        with ExitStack() as stack:
            if not grad:
                stack.enter_context(torch.no_grad())
            for d, side in sides:
                stack.enter_context(d.recording(side))
            return call_model(model, inputs)

    def _add_supervised(
        self, losses: dict[str, torch.Tensor], key: str, outputs: Any, targets: torch.Tensor | None
    ) -> None:
        """``losses[key]`` = the model's own ``loss`` if it returned one, else ``student_loss`` on
        ``targets``; no entry when there are neither."""
        loss = _own_loss(outputs)
        if loss is None and targets is not None:
            loss = (self.student_loss or default_student_loss)(outputs, targets)
        if loss is not None:
            losses[key] = loss

    @staticmethod
    def _add_distill(
        losses: dict[str, torch.Tensor],
        prefix: str,
        distiller: ConfigurableDistiller,
        data: Mapping[str, Any],
        detach_teacher: bool = False,
        weight: float | None = None,
    ) -> None:
        """``losses[prefix + name]`` = each of ``distiller``'s losses (times ``weight`` if given)."""
        for name, value in distiller.compute_distill_losses(data, detach_teacher=detach_teacher).items():
            losses[prefix + name] = value if weight is None else weight * value
