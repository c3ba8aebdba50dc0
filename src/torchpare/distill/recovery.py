"""Pruning-aware distillation in one call: ``recover(pruned, original)`` -> a ready training algorithm.

The original model teaches its own pruned copy. Layers are paired by name (a pruned model keeps its
module names); where a layer lost output channels, an adapter initialised from the kept channels
(:func:`~torchpare.distill.adapters.conv2d_adapter`) narrows the teacher's output to the student's,
so the feature loss starts near zero wherever the pruned copy still computes what the original did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Mapping as AbcMapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare._utils import did_you_mean
from torchpare.distill.adapters import conv2d_adapter, linear_adapter
from torchpare.distill.algorithms.base import BaseAlgorithm, StudentLoss
from torchpare.distill.mapping import Mapping, distill
from torchpare.model_io import logits_of
from torchpare.record.base import normalize_data_idx
from torchpare.registry import LOSSES

__all__ = ["Recovery", "recover", "cosine_distance"]

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos(s, t))`` over the last dimension (the ``"cosine"`` criterion: embeddings)."""
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


_FUNCTIONAL = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "cosine": cosine_distance}
_DEFAULT = object()  # logits_loss default: KLDivergence(tau=4)


def _out_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None


def _build_loss(spec: Any, who: str, what: str) -> Criterion:
    if isinstance(spec, str) and spec in _FUNCTIONAL:
        return _FUNCTIONAL[spec]
    if isinstance(spec, str):
        spec = {"type": spec}
    if isinstance(spec, AbcMapping):
        return LOSSES.build(spec)
    if callable(spec):
        return spec
    raise TypeError(
        f"{who}: {what} must be a callable (s, t) -> loss, one of {sorted(_FUNCTIONAL)}, a LOSSES name or "
        f"config dict; got {type(spec).__name__}."
    )


def _field(output: Any, path: tuple[int | str, ...]) -> Any:
    """``output`` followed along ``path`` (dict keys / attributes for strings, indices for integers)."""
    value = output
    for step in path:
        try:
            if isinstance(step, int) or isinstance(value, AbcMapping):
                value = value[step]
            else:
                value = getattr(value, step)
        except (KeyError, IndexError, AttributeError, TypeError):
            keys = list(value) if isinstance(value, AbcMapping) else []
            raise KeyError(
                f"Recovery.loss(): recover(output={'.'.join(map(str, path))!r}): the model output has no "
                f"{step!r}" + (f"; its fields: {', '.join(map(str, keys))}" if keys else "") + "."
            ) from None
    return value


class Recovery(BaseAlgorithm):
    """A pruned student distilled from its original: what :func:`recover` returns.

    Training contract of every algorithm: ``losses = recovery.loss(inputs, targets)`` then
    ``recovery.total_loss(losses).backward()``. ``recovery.parameters()`` are the student's and the
    adapters' (give them to the optimiser); the teacher is frozen (``requires_grad=False``, eval mode),
    kept out of ``parameters()``/``state_dict()`` but moved by ``.to()``.

    :meth:`loss` returns ``student.loss`` (when ``targets`` are given and the student loss is enabled),
    ``distill.loss_logits`` and ``distill.loss_<layer>``; it accepts ``indices`` and further batch
    values only for the engine's calling convention.

    Attributes:
        student: The pruned model (trains).
        teacher: The original model (frozen).
        adapters: ``nn.ModuleDict`` of adapters, keyed by layer name with ``.`` replaced by ``__``;
            use :meth:`adapter` to look one up by layer name.
        layers: Names of the layers whose outputs are distilled, in order.
        mapping: The :class:`~torchpare.distill.mapping.Mapping` used per step.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        layers: Sequence[str],
        adapters: dict[str, nn.Module],
        criterion: Criterion,
        logits_loss: Criterion | None,
        feature_weight: float,
        student_loss: StudentLoss | None,
        calculate_student_loss: bool,
        output: tuple[int | str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.output = output
        self.student = student
        self._add_frozen("teacher", teacher)
        self.adapters = nn.ModuleDict({name.replace(".", "__"): a for name, a in adapters.items()})
        self.layers = list(layers)
        self.criterion = criterion
        self.logits_loss = logits_loss
        self.feature_weight = feature_weight
        self.student_loss = student_loss
        self.calculate_student_loss = calculate_student_loss
        self.mapping = Mapping(student, teacher)
        for name in self.layers:
            # the payload carries the layer name: a module called k times yields k triples
            self.mapping.add(name, name, payload=(name, adapters.get(name)))
        self.train(self.training)

    @property
    def teacher(self) -> nn.Module:
        return self._frozen["teacher"]

    def adapter(self, layer: str) -> nn.Module | None:
        """The adapter of ``layer`` (``None`` where the widths agree and no adapter is needed).

        Raises:
            KeyError: ``layer`` is not distilled (names the closest distilled layers).
        """
        if layer not in self.layers:
            raise KeyError(
                f"Recovery.adapter(): {layer!r} is not a distilled layer{did_you_mean(layer, self.layers)}."
            )
        key = layer.replace(".", "__")
        return dict(self.adapters.items()).get(key)

    def _losses(
        self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        with distill(student=self.student, teacher=self.teacher, mapping=self.mapping) as distill_model:
            triples = distill_model.call_batch(inputs)
            student_out, teacher_out = distill_model.student_output, distill_model.teacher_output
        if self.calculate_student_loss:
            self._add_supervised(losses, "student.loss", student_out, targets)
        if self.logits_loss is not None:
            if self.output is None:
                preds_s, preds_t = logits_of(student_out), logits_of(teacher_out)
            else:
                preds_s, preds_t = _field(student_out, self.output), _field(teacher_out, self.output)
            losses["distill.loss_logits"] = self.logits_loss(preds_s, preds_t)
        per_layer: dict[str, list[torch.Tensor]] = {}
        for s_feat, t_feat, (name, adapter) in triples:
            target = t_feat if adapter is None else adapter(t_feat)
            if (
                isinstance(s_feat, torch.Tensor)
                and isinstance(target, torch.Tensor)
                and s_feat.shape != target.shape
            ):
                raise ValueError(
                    f"Recovery.loss(): layer {name!r}: student output {tuple(s_feat.shape)} vs teacher "
                    f"{tuple(target.shape)}; only nn.Conv2d / nn.Linear layers get adapters, so distil the "
                    f"conv/linear that produces this output instead."
                )
            per_layer.setdefault(name, []).append(self.criterion(s_feat, target))
        for name, values in per_layer.items():
            losses[f"distill.loss_{name}"] = self.feature_weight * sum(values) / len(values)
        return losses


def recover(
    pruned: nn.Module,
    original: nn.Module,
    layers: Sequence[str] | None = None,
    criterion: str | Criterion | AbcMapping[str, Any] = "mse",
    logits_loss: Any = _DEFAULT,
    feature_weight: float = 1.0,
    student_loss: StudentLoss | None = None,
    calculate_student_loss: bool = True,
    train_adapters: bool = True,
    output: str | Sequence[int | str] | None = None,
) -> Recovery:
    """Distil ``original`` into its pruned copy ``pruned``: feature losses through adapters + logits KD.

    Layers are paired by module name. By default every ``nn.Conv2d`` / ``nn.Linear`` present in both
    models whose output width differs (the pruned ones) is distilled, through a
    :func:`~torchpare.distill.adapters.conv2d_adapter` / :func:`~torchpare.distill.adapters.linear_adapter`
    (``criterion(student_out, adapter(teacher_out))``), plus the final outputs with ``logits_loss``.
    Only the first pruned layer of a chain starts with a zero feature loss (in eval mode; in train
    mode the student's batch norms use batch statistics): later layers read fewer input channels than
    in the original, so their outputs differ from the original's kept channels.

    Side effect: ``original`` is frozen in place (``requires_grad_(False)``, eval mode).

    Args:
        pruned: The pruned model (the student; trains).
        original: The model it was pruned from (the teacher), with the same module names.
        layers: Names of the layers to distil (any module; those whose width differs must be
            ``nn.Conv2d`` or ``nn.Linear`` to get an adapter). Default: every pruned conv/linear.
        criterion: Feature loss ``(s_feature, t_feature) -> scalar``: ``"mse"`` (default), ``"l1"``,
            ``"smooth_l1"``, ``"cosine"`` (:func:`cosine_distance`), a ``LOSSES`` name or config dict, or
            any callable.
        logits_loss: Loss on the models' outputs ``(preds_S, preds_T)``; default
            ``KLDivergence(tau=4)``; ``None`` turns it off. Also a ``LOSSES`` name or config dict.
        feature_weight: Multiplies every feature loss.
        student_loss: ``(outputs, targets) -> tensor``; default cross-entropy on the logits.
        calculate_student_loss: Add the supervised ``student.loss`` when targets are given.
        train_adapters: Train the adapters with the student (default). ``False`` keeps them as the
            fixed selection of the kept channels, so only the student can lower the feature loss.
        output: What ``logits_loss`` compares instead of the logits: a field or path of both models'
            outputs, as a recorder's ``data_idx`` (``"sentence_embedding"`` of a ``SentenceTransformer``,
            ``"hidden_states.-1"``); its loss is still reported as ``distill.loss_logits``.

    Returns:
        A :class:`Recovery` (an ``nn.Module``) with ``.loss(inputs, targets)`` and ``.total_loss(losses)``.

    Raises:
        ValueError: ``pruned is original``; nothing to distil; a width change at a layer that is not a
            conv/linear; adapter matching errors (kernel shapes differ).
        KeyError: a name in ``layers`` missing from either model (names the closest ones).

    Example:
        >>> import copy
        >>> teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> student = copy.deepcopy(teacher)
        >>> keep = [0, 2, 3, 6]
        >>> student[0] = nn.Conv2d(1, 4, 3); student[2] = nn.Conv2d(4, 4, 3)
        >>> with torch.no_grad():
        ...     _ = student[0].weight.copy_(teacher[0].weight[keep]), student[0].bias.copy_(teacher[0].bias[keep])
        ...     _ = student[2].weight.copy_(teacher[2].weight[:, keep]), student[2].bias.copy_(teacher[2].bias)
        >>> recovery = recover(student, teacher, logits_loss=None)
        >>> recovery.layers
        ['0']
        >>> losses = recovery.loss(torch.randn(2, 1, 6, 6))
        >>> sorted(losses), round(losses["distill.loss_0"].item(), 6)
        (['distill.loss_0'], 0.0)
    """
    who = "recover()"
    for side, model in (("pruned", pruned), ("original", original)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{who}: {side} must be an nn.Module, got {type(model).__name__}.")
    if pruned is original:
        raise ValueError(
            f"{who}: pruned and original are the same object; prune a copy (copy.deepcopy(model))."
        )
    s_modules = dict(pruned.named_modules())
    t_modules = dict(original.named_modules())
    if layers is None:
        layers = [
            name
            for name, module in s_modules.items()
            if _out_width(module) is not None
            and name in t_modules
            and type(t_modules[name]) is type(module)
            and _out_width(t_modules[name]) != _out_width(module)
        ]
    else:
        if isinstance(layers, str):
            layers = [layers]
        for name in layers:
            for side, modules in (("pruned", s_modules), ("original", t_modules)):
                if name not in modules:
                    raise KeyError(
                        f"{who}: layers entry {name!r} is not a module of the {side} model "
                        f"{type(pruned if side == 'pruned' else original).__name__}"
                        f"{did_you_mean(name, [n for n in modules if n])}."
                    )
    layers = list(layers)
    adapters: dict[str, nn.Module] = {}
    for name in layers:
        s_mod, t_mod = s_modules[name], t_modules[name]
        s_width, t_width = _out_width(s_mod), _out_width(t_mod)
        if type(s_mod) is type(t_mod) and s_width is not None and s_width == t_width:
            continue
        if isinstance(s_mod, nn.Conv2d) and isinstance(t_mod, nn.Conv2d):
            adapters[name] = conv2d_adapter(source=t_mod, target=s_mod, source_name=name, target_name=name)
        elif isinstance(s_mod, nn.Linear) and isinstance(t_mod, nn.Linear):
            adapters[name] = linear_adapter(source=t_mod, target=s_mod, source_name=name, target_name=name)
        elif s_width is None and t_width is None:
            continue  # e.g. a block or norm layer: distilled as is, widths must agree at run time
        else:
            raise ValueError(
                f"{who}: layer {name!r} is a {type(s_mod).__name__} in the pruned model and a "
                f"{type(t_mod).__name__} in the original; adapters exist for nn.Conv2d and nn.Linear pairs."
            )
    if logits_loss is _DEFAULT:
        from torchpare.distill.losses.kl_divergence import KLDivergence

        logits_loss = KLDivergence(tau=4.0)
    elif logits_loss is not None:
        logits_loss = _build_loss(logits_loss, who, "logits_loss")
    if not train_adapters:
        for adapter in adapters.values():
            adapter.requires_grad_(False)
    if not layers and logits_loss is None:
        raise ValueError(
            f"{who}: nothing to distil: no conv/linear layer changed width between the models and "
            f"logits_loss is None. Pass layers=[...] or a logits_loss."
        )
    return Recovery(
        pruned,
        original,
        layers,
        adapters,
        _build_loss(criterion, who, "criterion"),
        logits_loss,
        feature_weight,
        student_loss,
        calculate_student_loss,
        normalize_data_idx(output),
    )
