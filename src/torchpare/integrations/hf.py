"""``DistillationTrainer``: knowledge distillation inside a Hugging Face ``transformers.Trainer`` script.

Swap ``Trainer`` for :class:`DistillationTrainer` and pass a teacher and what to distil: a
:class:`~torchpare.distill.distiller.ConfigurableDistiller` (or its config dict) or a
:class:`~torchpare.distill.mapping.Mapping` whose payloads are loss callables. Per training step the
teacher (frozen, in eval mode, on the student's device) and then the student run on the same batch;
the distill losses are added to the task loss (``outputs.loss`` of a model given ``labels``; none for
unlabelled batches) and each is logged next to it through ``Trainer.log`` (``loss_<name>``,
``task_loss``, ``distill_loss``). Evaluation reports the task loss alone. Checkpoints and
``train(resume_from_checkpoint=...)`` work as with ``Trainer``; the teacher is not saved (it is not
trained), trainable distiller parts (connectors) are saved in ``torchpare_distiller.pt`` next to the
model and trained by the same optimizer. A :func:`~torchpare.prune.prune` d student works as is: its
checkpoints hold its pruned shapes and resume loads them back into the same (pruned) model.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from typing import Any

import torch
from torch import nn

try:
    from transformers import Trainer
except ImportError as exc:  # pragma: no cover - transformers is an optional dependency
    raise ImportError(f"torchpare.integrations.hf needs transformers: pip install 'torchpare[text]' ({exc})") from None

from torchpare.distill.algorithms.base import build_distiller
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.distill.mapping import Mapping

__all__ = ["DistillationTrainer", "mapping_to_distiller", "DISTILLER_STATE_NAME"]

DISTILLER_STATE_NAME = "torchpare_distiller.pt"


class _PayloadLoss(nn.Module):
    """A Mapping payload (``loss(student_output, teacher_output)``) as a distiller loss module."""

    def __init__(self, fn: Callable[[Any, Any], torch.Tensor], weight: float) -> None:
        super().__init__()
        self.fn = fn  # an nn.Module payload becomes a submodule (its parameters train and save)
        self.weight = weight

    def forward(self, s_feature: Any, t_feature: Any) -> torch.Tensor:
        return self.weight * self.fn(s_feature, t_feature)


def mapping_to_distiller(mapping: Mapping) -> ConfigurableDistiller:
    """A :class:`ConfigurableDistiller` computing one loss per :class:`Mapping` entry.

    A payload is a callable ``loss(student_output, teacher_output) -> tensor`` (an ``nn.Module`` such as
    ``nn.MSELoss()`` or a function), or a dict ``{"loss": callable, "weight": float, "name": str}``. Entry
    ``i`` is logged as ``loss_<name>`` (default name: ``"<student module>"``, or ``"map<i>"`` for the
    whole model). The first call of each mapped module per forward is distilled.

    Raises:
        TypeError: a payload is not callable, or not such a dict.
        ValueError: two entries share a loss name.

    Example:
        >>> from torch import nn
        >>> student, teacher = nn.Sequential(nn.Linear(4, 2)), nn.Sequential(nn.Linear(4, 2))
        >>> d = mapping_to_distiller(Mapping(student, teacher).add("0", "0", payload=nn.MSELoss()))
        >>> list(d.distill_losses)
        ['0']
    """
    recorders_s: dict[str, Any] = {}
    recorders_t: dict[str, Any] = {}
    losses: dict[str, nn.Module] = {}
    forward: dict[str, Any] = {}
    for i, entry in enumerate(mapping):
        payload = entry.payload
        spec = dict(payload) if isinstance(payload, MappingABC) else {"loss": payload}
        fn, weight = spec.get("loss"), spec.get("weight", 1.0)
        if not callable(fn) or not isinstance(weight, (int, float)):
            raise TypeError(
                f"DistillationTrainer: the payload of mapping entry {i} ({entry.student!r} <- {entry.teacher!r}) "
                f"must be a loss callable loss(student_output, teacher_output) or a dict "
                f"{{'loss': callable, 'weight': float, 'name': str}}, got {type(payload).__name__}."
            )
        name = str(spec.get("name") or entry.student.replace(".", "_") or f"map{i}")
        if name in losses:
            raise ValueError(
                f"DistillationTrainer: mapping entries share the loss name {name!r}; give each payload a "
                f"distinct 'name' (payload={{'loss': ..., 'name': ...}})."
            )
        recorders_s[name] = {"type": "ModuleOutputs", "source": entry.student}
        recorders_t[name] = {"type": "ModuleOutputs", "source": entry.teacher}
        losses[name] = _PayloadLoss(fn, float(weight))
        forward[name] = {"s_feature": {"from_student": True, "recorder": name},
                         "t_feature": {"from_student": False, "recorder": name}}
    if not losses:
        raise ValueError("DistillationTrainer: the mapping is empty; add pairs with mapping.add(student, teacher).")
    return ConfigurableDistiller(student_recorders=recorders_s, teacher_recorders=recorders_t,
                                 distill_losses=losses, loss_forward_mappings=forward)


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` that distils a frozen teacher into the trained model.

    Args:
        *args: ``Trainer``'s arguments (``model`` is the student; ``args``, datasets, collator, ...).
        teacher_model: The teacher, an ``nn.Module`` called like the student (``teacher(**inputs)``,
            without the label keys). It is frozen (``requires_grad_(False)``), kept in eval mode and moved
            to the student's device; it is neither trained nor saved.
        distiller: A :class:`ConfigurableDistiller` or its config dict; its recorders name modules of the
            student and the teacher. Give this or ``mapping``.
        mapping: A :class:`Mapping` built as ``Mapping(student, teacher)``; see :func:`mapping_to_distiller`.
        task_loss_weight: Weight of the task loss (the model's ``outputs.loss``); 0 distils only.
        **kwargs: ``Trainer``'s keyword arguments.

    Logs (next to ``loss``, averaged over the steps since the last log): ``task_loss``, ``distill_loss``
    and each ``loss_<name>``. ``eval_loss`` is the task loss alone.

    Raises:
        TypeError: no student model, a teacher that is not an ``nn.Module``, neither or both of
            ``distiller``/``mapping``, or a mapping built for other models.
        DistillerConfigError: (a ValueError) a distiller config with unknown losses or recorder sources.

    Example:
        >>> import tempfile, torch, transformers
        >>> from torch import nn
        >>> cfg = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                               intermediate_size=16, max_position_embeddings=8, num_labels=2)
        >>> student = transformers.BertForSequenceClassification(cfg)
        >>> teacher = transformers.BertForSequenceClassification(cfg)
        >>> args = transformers.TrainingArguments(tempfile.mkdtemp(), max_steps=10, report_to=[], use_cpu=True)
        >>> mapping = Mapping(student, teacher).add("classifier", "classifier", payload=nn.MSELoss())
        >>> trainer = DistillationTrainer(model=student, args=args, train_dataset=[], teacher_model=teacher,
        ...                               mapping=mapping)
        >>> batch = {"input_ids": torch.tensor([[2, 5, 7, 3]]), "labels": torch.tensor([1])}
        >>> loss = trainer.compute_loss(student.train(), batch)  # what trainer.train() calls per step
        >>> trainer.log({"loss": loss.item()})
        >>> sorted(trainer.state.log_history[-1])
        ['distill_loss', 'epoch', 'loss', 'loss_classifier', 'step', 'task_loss']
    """

    def __init__(
        self,
        *args: Any,
        teacher_model: nn.Module,
        distiller: ConfigurableDistiller | MappingABC[str, Any] | None = None,
        mapping: Mapping | None = None,
        task_loss_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        who = "DistillationTrainer"
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"{who}: pass the student as model=...; model_init is not supported.")
        if not isinstance(teacher_model, nn.Module):
            raise TypeError(f"{who}: teacher_model must be an nn.Module, got {type(teacher_model).__name__}.")
        if (distiller is None) == (mapping is None):
            raise TypeError(
                f"{who}: pass exactly one of distiller= (a ConfigurableDistiller or its config dict) and "
                f"mapping= (a torchpare.distill.mapping.Mapping with loss payloads)."
            )
        if mapping is not None:
            if not isinstance(mapping, Mapping):
                raise TypeError(f"{who}: mapping must be a Mapping, got {type(mapping).__name__}.")
            if mapping.student is not self.model or mapping.teacher is not teacher_model:
                raise TypeError(
                    f"{who}: the mapping was built for other models; build it as Mapping(model, teacher_model) "
                    f"with the student and teacher passed here."
                )
            distiller = mapping_to_distiller(mapping)
        self.distiller = build_distiller(distiller, who)  # type: ignore[arg-type]
        self.teacher = teacher_model.requires_grad_(False).eval()
        self.task_loss_weight = float(task_loss_weight)
        self.distiller.prepare_from_student(self.model)
        self.distiller.prepare_from_teacher(self.teacher)
        self._place(self._student_device())
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_count = 0

    # -- set-up ---------------------------------------------------------------------------------------
    def _student_device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else self.args.device

    def _place(self, device: torch.device) -> None:
        self.teacher.to(device)
        self.distiller.to(device)
        self._teacher_device = device

    def _trainable_distiller_params(self) -> list[nn.Parameter]:
        return [p for p in self.distiller.parameters() if p.requires_grad]

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """``Trainer.create_optimizer`` plus a parameter group for trainable distiller parts (connectors).

        Raises:
            ValueError: a user-given optimizer (``optimizers=(opt, sched)``) lacks them.
        """
        ours = self.optimizer is None
        optimizer = super().create_optimizer(model) if ours else self.optimizer
        extra = self._trainable_distiller_params()
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in extra if id(p) not in held]
        if missing and not ours:
            raise ValueError(
                f"DistillationTrainer: the distiller has {len(missing)} trainable parameters (connectors) that "
                f"the given optimizer does not hold; add trainer.distiller.parameters() to it, or let the "
                f"Trainer create the optimizer."
            )
        if missing:
            optimizer.add_param_group({"params": missing, "weight_decay": self.args.weight_decay})
        return optimizer

    # -- the step -------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """Task loss (weighted) + distill losses in training; the task loss alone in evaluation."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        device = self._student_device()
        if device != self._teacher_device:
            self._place(device)
        self.teacher.eval()
        label_keys = set(self.label_names or ["labels"])
        has_labels = any(inputs.get(k) is not None for k in label_keys)
        teacher_inputs = {k: v for k, v in inputs.items() if k not in label_keys}
        with self.distiller.recording("teacher"), torch.no_grad():
            self.teacher(**teacher_inputs)
        with self.distiller.recording("student"):
            if has_labels and self.task_loss_weight != 0.0:
                task_loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                          num_items_in_batch=num_items_in_batch)
            else:
                task_loss, outputs = None, model(**teacher_inputs)
        losses = self.distiller.compute_distill_losses(data=inputs)
        distill = torch.stack([v.float() for v in losses.values()]).sum() if losses else torch.zeros((), device=device)
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
                self.compute_loss_func is not None)
        # when `scaled`, Trainer leaves the division over the accumulated micro-batches to compute_loss (the
        # task loss is normalised by num_items_in_batch); the distill losses are per-batch means: divide them
        ga = self.current_gradient_accumulation_steps if scaled else 1
        total = distill / ga
        if task_loss is not None:
            total = total + self.task_loss_weight * task_loss
        self._accumulate(task_loss, distill, losses)
        return (total, outputs) if return_outputs else total

    def _accumulate(self, task_loss: torch.Tensor | None, distill: torch.Tensor,
                    losses: dict[str, torch.Tensor]) -> None:
        values = {"distill_loss": distill, **losses}
        if task_loss is not None:
            values["task_loss"] = task_loss
        for key, value in values.items():
            value = value.detach().float()
            self._log_sums[key] = self._log_sums[key] + value if key in self._log_sums else value
        self._log_count += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """``Trainer.log`` with the mean task and distill losses since the last training log added."""
        if "loss" in logs and self._log_count:
            for key, total in self._log_sums.items():
                logs.setdefault(key, round(float(total) / self._log_count, 6))
            self._log_sums, self._log_count = {}, 0
        super().log(logs, start_time)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        super()._save(output_dir, state_dict)
        folder = output_dir if output_dir is not None else self.args.output_dir
        state = self.distiller.state_dict()
        if state and self.args.should_save:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".distiller", suffix=".tmp")
            os.close(fd)
            try:
                torch.save(state, tmp)
                os.replace(tmp, os.path.join(folder, DISTILLER_STATE_NAME))
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, DISTILLER_STATE_NAME)
        if os.path.isfile(path):
            self.distiller.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        elif self.distiller.state_dict():
            warnings.warn(
                f"DistillationTrainer: {path!r} not found; the distiller's connectors start from their "
                f"initial weights (the checkpoint was not written by DistillationTrainer).",
                UserWarning, stacklevel=2,
            )
