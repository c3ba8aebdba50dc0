"""AutoSlim: train one slimmable supernet with the sandwich rule and in-place distillation.

Every step (Yu & Huang, *Universally Slimmable Networks*, 2019; *AutoSlim*, 2019) trains, on the
same batch, the **max** subnet (every channel) on the labels, then the **min** subnet and
``num_random_samples`` **random** subnets on the max subnet's detached outputs (in-place
distillation, KL with temperature by default). All losses are summed, so one ``backward`` accumulates
every subnet's gradients and the optimiser takes one step. Subnets are masks of a
:class:`~torchpare.prune.RatioPruner` over the supernet (no shape changes); kept channels come first.

BatchNorm statistics per width:

* ``bn="switchable"`` (slimmable networks, a fixed list of widths): every ``BatchNorm1d``/``2d``/``3d``
  becomes a :class:`~torchpare.slim.SwitchableBatchNorm1d`/``2d``/``3d`` with one set of statistics per width ratio of the
  pruner; the sampled subnets are uniform (one ratio for every space), so each width trains its own
  statistics, and evaluating a listed uniform width needs no calibration.
* ``bn="recalibrate"`` (universally slimmable / AutoSlim, arbitrary widths per space): the random
  subnets take one ratio per space; the running statistics follow the max subnet only, and any other
  subnet is evaluated after :func:`~torchpare.prune.recalibrate_bn` on a few batches
  (:meth:`AutoSlim.subnet`).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchpare.distill.algorithms.base import (
    BaseAlgorithm,
    StudentLoss,
    build_model,
    forward_model,
    logits_of,
)
from torchpare.prune import RatioPruner, deploy_subnet, recalibrate_bn
from torchpare.registry import ALGORITHMS, LOSSES, PRUNERS
from torchpare.slim.sliced import SlicedForward
from torchpare.slim.switchable_bn import SwitchableBatchNorm, convert_switchable_bn, switch_bn, to_plain_bn

__all__ = ["AutoSlim"]

Subnet = dict[str, torch.Tensor]
BNMode = Literal["switchable", "recalibrate"]


def _example(example_inputs: Any, input_shape: Sequence[int] | None, who: str) -> Any:
    if example_inputs is not None:
        return example_inputs
    if input_shape is None:
        raise ValueError(
            f"{who}: give example_inputs (a tensor) or input_shape (e.g. [1, 1, 8, 8]) to trace the model."
        )
    return torch.zeros(*[int(d) for d in input_shape])


@ALGORITHMS.register(aliases=("Slimmable",))
class AutoSlim(BaseAlgorithm):
    """A slimmable supernet trained with the sandwich rule and in-place distillation.

    :meth:`loss` returns ``student.loss`` (the max subnet on the labels), ``distill.min`` and
    ``distill.random<i>`` (the other subnets against the max subnet's detached logits). After
    :meth:`loss` the supernet is back at its max subnet (with the max width's statistics), so
    :meth:`forward` and the engine's validation evaluate the full-width network.

    Args:
        model: The supernet (a module or a ``MODELS`` config dict).
        pruner: A :class:`~torchpare.prune.RatioPruner` built on ``model``, or its arguments as a dict
            (``ratios``, ``divisor``, ``except_start_keys``, ``ignored``; ``type`` defaults to
            ``RatioPruner``); ``None``: ``RatioPruner`` with its defaults.
        example_inputs: Inputs to trace the model with (when ``pruner`` is not built already).
        input_shape: Instead of ``example_inputs``: the shape of a zero tensor (YAML configs).
        num_random_samples: Random subnets per step, besides the max and min ones.
        distill_loss: The in-place distillation loss, called as ``loss(preds_S, preds_T)``: a module or
            a ``LOSSES`` config dict; default ``KLDivergence`` with ``tau``.
        tau: Temperature of the default KL loss.
        bn: ``"switchable"`` (one set of BatchNorm statistics per width of ``pruner.ratios``; subnets
            are uniform widths) or ``"recalibrate"`` (independent ratios per space; statistics of
            other subnets re-estimated when evaluated).
        seed: Seed of the random subnet sampling (its state is saved in :meth:`state_dict`).
        subnet_forward: How the min/random subnets run in training: ``"slice"`` (default: on the
            leading slices of the shared weights, so a narrow subnet costs what its width costs; checked
            against masks at construction, with a warning and masks where it differs) or ``"mask"``
            (the pruner's masks at full width).
        student_loss: ``(outputs, targets) -> tensor`` for the max subnet; default cross-entropy
            (``-100`` ignored).

    Raises:
        TypeError: a ``pruner`` that is not a ``RatioPruner`` (or dict), or built on another model.
        ValueError: a negative ``num_random_samples``, an unknown ``bn`` mode, or no way to trace.

    Example:
        >>> from torchpare.zoo import DigitsCNN
        >>> algo = AutoSlim(DigitsCNN(width=4), {"ratios": [0.5, 1.0]}, input_shape=[1, 1, 8, 8])
        >>> losses = algo.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> sorted(losses)
        ['distill.min', 'distill.random0', 'distill.random1', 'student.loss']
        >>> algo.total_loss(losses).backward()
    """

    def __init__(
        self,
        model: nn.Module | Mapping[str, Any],
        pruner: RatioPruner | Mapping[str, Any] | None = None,
        example_inputs: Any = None,
        input_shape: Sequence[int] | None = None,
        num_random_samples: int = 2,
        distill_loss: nn.Module | Mapping[str, Any] | None = None,
        tau: float = 1.0,
        bn: BNMode = "switchable",
        seed: int = 0,
        student_loss: StudentLoss | None = None,
        subnet_forward: Literal["slice", "mask"] = "slice",
    ) -> None:
        super().__init__()
        who = type(self).__name__
        problems = self._setting_errors(num_random_samples, bn, subnet_forward)
        if problems:
            raise ValueError("; ".join(f"{who}: {key} {message}" for key, message in problems) + ".")
        self.student = build_model(model, who)
        self.bn_mode = bn
        self.num_random_samples = num_random_samples
        self.student_loss = student_loss
        if isinstance(pruner, RatioPruner):
            if pruner.model is not self.student:
                raise TypeError(f"{who}: the pruner was built on another model; build it on `model`.")
            if bn == "switchable" and not any(isinstance(m, SwitchableBatchNorm) for m in self.student.modules()):
                convert_switchable_bn(self.student, (*pruner.ratios, 1.0))
                pruner.prepare_from_supernet(self.student)
            self.pruner = pruner
        elif pruner is None or isinstance(pruner, Mapping):
            spec = dict(pruner or {})
            spec.setdefault("type", "RatioPruner")
            spec.setdefault("except_start_keys", None)
            try:
                self._ratio_pruner_class(spec["type"])
            except TypeError as exc:
                raise TypeError(f"{who}: pruner.type {exc}.") from None
            x = _example(example_inputs, input_shape, who)
            if bn == "switchable":
                ratios = spec.get("ratios", RatioPruner.DEFAULT_RATIOS)
                convert_switchable_bn(self.student, (*ratios, 1.0))
            self.pruner = PRUNERS.build({**spec, "model": self.student, "example_inputs": x})
        else:
            raise TypeError(f"{who}: pruner must be a RatioPruner or a dict of its arguments, got {type(pruner).__name__}.")
        if distill_loss is None:
            distill_loss = {"type": "KLDivergence", "tau": tau}
        self.distill_loss = LOSSES.build(distill_loss) if isinstance(distill_loss, Mapping) else distill_loss
        if not callable(self.distill_loss):
            raise TypeError(f"{who}: distill_loss must be a loss module or a LOSSES config dict.")
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.pruner.set_max_channel()
        self._sliced: SlicedForward | None = None
        if subnet_forward == "slice":
            sliced = SlicedForward(self.student, self.pruner)
            probe = torch.Generator().manual_seed(0)
            trials = [self.pruner.ratio_subnet(self.ratios[0]), self.pruner.sample_subnet(probe)]
            if all(sliced.check(t) for t in trials):
                self._sliced = sliced
            else:
                warnings.warn(
                    f"{who}: running subnets on sliced weights does not reproduce the masked subnet on "
                    f"{type(self.student).__name__} (a layer keeps a channel count of its own, e.g. a grouped "
                    "convolution or a fixed reshape); training with masks at full width instead "
                    "(subnet_forward='mask' silences this).",
                    stacklevel=2,
                )

    @staticmethod
    def _ratio_pruner_class(kind: Any) -> type[RatioPruner]:
        """The ``PRUNERS`` class named ``kind``: ``KeyError`` for an unknown name, ``TypeError`` (its
        message) unless it is ``RatioPruner`` or a subclass."""
        target = PRUNERS.get(kind)
        if not (isinstance(target, type) and issubclass(target, RatioPruner)):
            raise TypeError(f"must be RatioPruner (or a subclass), got {kind!r}")
        return target

    @staticmethod
    def _setting_errors(num_random_samples: Any, bn: Any, subnet_forward: Any) -> list[tuple[str, str]]:
        problems = []
        if isinstance(num_random_samples, bool) or not isinstance(num_random_samples, int) or num_random_samples < 0:
            problems.append(("num_random_samples", f"must be an int >= 0, got {num_random_samples!r}"))
        if bn not in ("switchable", "recalibrate"):
            problems.append(("bn", f"must be 'switchable' or 'recalibrate', got {bn!r}"))
        if subnet_forward not in ("slice", "mask"):
            problems.append(("subnet_forward", f"must be 'slice' or 'mask', got {subnet_forward!r}"))
        return problems

    @classmethod
    def config_errors(cls, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every problem of an ``algorithm`` config of this type that shows without a model:
        ``[(key path, message)]``; the engine and ``torchpare slim`` report them before anything runs.

        Checks the settings the constructor checks, and a ``pruner`` dict's ``type``, ``ratios`` and
        ``divisor`` (:meth:`RatioPruner.argument_errors <torchpare.prune.RatioPruner.argument_errors>`).

        Example:
            >>> [key for key, _ in AutoSlim.config_errors({"bn": "sync", "pruner": {"divisor": "16"}})]
            ['bn', 'pruner.divisor']
        """
        defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
        settings = ("num_random_samples", "bn", "subnet_forward")
        problems = cls._setting_errors(*(cfg.get(name, defaults[name]) for name in settings))
        pruner = cfg.get("pruner")
        if isinstance(pruner, Mapping):
            try:
                cls._ratio_pruner_class(pruner.get("type", "RatioPruner"))
            except (KeyError, TypeError) as exc:
                problems.append(("pruner.type", str(exc.args[0] if exc.args else exc)))
            given = {k: pruner[k] for k in ("ratios", "divisor") if k in pruner}
            problems += [(f"pruner.{key}", message) for key, message in RatioPruner.argument_errors(**given)]
        elif pruner is not None and not isinstance(pruner, RatioPruner):
            problems.append(("pruner", f"must be a mapping of RatioPruner arguments, got {type(pruner).__name__}"))
        return problems

    # -- widths -----------------------------------------------------------------------------------
    @property
    def ratios(self) -> tuple[float, ...]:
        """The pruner's width ratios."""
        return self.pruner.ratios

    def _uniform(self, subnet: Mapping[str, torch.Tensor]) -> float | None:
        """The ratio of a uniform subnet of the pruner (``1.0`` for the max one), else ``None``."""
        for r in (*self.ratios, 1.0):
            ref = self.pruner.ratio_subnet(r)
            if all(torch.equal(ref[g], subnet[g].to(torch.bool)) for g in ref):
                return r
        return None

    def sample_subnets(self) -> list[tuple[str, Subnet, float | None]]:
        """This step's ``(name, subnet, uniform ratio or None)``: max, min, then the random ones
        (drawn from the algorithm's own generator, part of the resumable state)."""
        p = self.pruner
        out: list[tuple[str, Subnet, float | None]] = [
            ("max", p.max_subnet(), 1.0),
            ("min", p.ratio_subnet(self.ratios[0]), self.ratios[0]),
        ]
        for i in range(self.num_random_samples):
            if self.bn_mode == "switchable":
                r = self.ratios[int(torch.randint(len(self.ratios), (1,), generator=self._generator))]
                out.append((f"random{i}", p.ratio_subnet(r), r))
            else:
                out.append((f"random{i}", p.sample_subnet(self._generator), None))
        return out

    def _norms(self) -> list[_BatchNorm]:
        cached = self.__dict__.get("_norm_cache")
        if cached is None or cached[0] is not self.student:
            norms = [m for m in self.student.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
            cached = self.__dict__["_norm_cache"] = (self.student, norms)
        return cached[1]

    def _snapshot(self) -> list[tuple[_BatchNorm, torch.Tensor, torch.Tensor, torch.Tensor]]:
        return [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                for m in self._norms()]

    @staticmethod
    def _restore(saved: Iterable[tuple[_BatchNorm, torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        for m, mean, var, count in saved:
            m.running_mean.data.copy_(mean)
            m.running_var.data.copy_(var)
            m.num_batches_tracked.data.copy_(count)

    # -- training ---------------------------------------------------------------------------------
    def _losses(self, inputs: Any, targets: torch.Tensor | None, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        teacher: torch.Tensor | None = None
        try:
            for name, subnet, ratio in self.sample_subnets():
                if self.bn_mode == "switchable":
                    switch_bn(self.student, 1.0 if ratio is None else ratio)
                if name == "max":
                    self.pruner.set_max_channel()
                    outputs = forward_model(self.student, inputs)
                    self._add_supervised(losses, "student.loss", outputs, targets)
                    teacher = logits_of(outputs).detach()
                    continue
                if self._sliced is None:
                    # Consumer-input masks suffice to train (outputs exact, masked units get no gradient);
                    # masked BatchNorm statistics are put back (recalibrate) or belong to this width only.
                    self.pruner.set_subnet(subnet, zero_outputs=False)
                saved = self._snapshot() if self.bn_mode == "recalibrate" and self.training else None
                try:
                    outputs = (forward_model(self.student, inputs) if self._sliced is None
                               else self._sliced(subnet, inputs))
                finally:
                    if saved is not None:
                        self._restore(saved)  # the running statistics follow the max subnet only
                losses[f"distill.{name}"] = self.distill_loss(logits_of(outputs), teacher)
        finally:
            self.pruner.set_max_channel()
            if self.bn_mode == "switchable":
                switch_bn(self.student, 1.0)
        return losses

    # -- resumable sampling state -----------------------------------------------------------------
    def get_extra_state(self) -> torch.Tensor:
        return self._generator.get_state()

    def set_extra_state(self, state: Any) -> None:
        self._generator.set_state(torch.as_tensor(state, dtype=torch.uint8).cpu())

    # -- subnets with fitting statistics ----------------------------------------------------------
    def to_subnet(self, subnet: float | Mapping[str, Any]) -> Subnet:
        """Masks of ``subnet``: a width ratio, a ``{space: mask}`` dict or a channel config."""
        if isinstance(subnet, int | float):
            return self.pruner.ratio_subnet(float(subnet))
        if any(isinstance(v, Mapping) for v in subnet.values()):
            return self.pruner.subnet_from_channel_cfg(subnet)
        return self.pruner.check_subnet(subnet)

    @contextmanager
    def subnet(self, subnet: float | Mapping[str, Any], calib_data: Iterable[Any] | None = None,
               num_batches: int | None = None) -> Iterator[nn.Module]:
        """Run the supernet as ``subnet`` with BatchNorm statistics that fit it, then restore it
        (masks, statistics and every module's train/eval mode).

        A listed uniform width under ``bn="switchable"``, and the max subnet, use their own statistics;
        any other subnet needs ``calib_data`` (batches as :func:`~torchpare.prune.recalibrate_bn` takes)
        and its statistics are re-estimated on it (the supernet's own are put back afterwards).

        Yields:
            The supernet (masked as ``subnet``).

        Raises:
            ValueError: a subnet without fitting statistics and no ``calib_data``.

        Example:
            >>> from torchpare.zoo import DigitsCNN
            >>> algo = AutoSlim(DigitsCNN(width=4), {"ratios": [0.5, 1.0]}, input_shape=[1, 1, 8, 8])
            >>> with algo.subnet(0.5) as net:
            ...     net.eval()(torch.rand(2, 1, 8, 8)).shape
            torch.Size([2, 10])
        """
        masks = self.to_subnet(subnet)
        ratio = self._uniform(masks)
        own = ratio == 1.0 or (ratio is not None and self.bn_mode == "switchable")
        if not own and calib_data is None:
            raise ValueError(
                f"{type(self).__name__}.subnet(): this subnet has no BatchNorm statistics of its own "
                f"(bn={self.bn_mode!r}); pass calib_data (a few training batches) to re-estimate them."
            )
        saved = self._snapshot()
        switchable = [(m, m.stat_means.clone(), m.stat_vars.clone(), m.stat_counts.clone())
                      for m in self.student.modules() if isinstance(m, SwitchableBatchNorm)]
        modes = [(m, m.training) for m in self.student.modules()]
        try:
            if self.bn_mode == "switchable":
                switch_bn(self.student, ratio if own and ratio is not None else 1.0)
            self.pruner.set_subnet(masks)
            if not own:
                recalibrate_bn(self.student, calib_data, num_batches)
            yield self.student
        finally:
            self.pruner.set_max_channel()
            # Switch back before restoring: restoring first would write the max width's statistics
            # into the active (narrower) width's, and switching would then store them as that width's.
            switch_bn(self.student, 1.0)
            self._restore(saved)
            with torch.no_grad():
                for m, means, variances, counts in switchable:
                    m.stat_means.copy_(means)
                    m.stat_vars.copy_(variances)
                    m.stat_counts.copy_(counts)
            for module, training in modes:
                module.training = training

    def deploy(self, channel_cfg: float | Mapping[str, Any], calib_data: Iterable[Any] | None = None,
               num_batches: int | None = None) -> nn.Module:
        """A physically smaller copy of the supernet computing what ``channel_cfg``'s masked subnet
        computes (with fitting BatchNorm statistics, see :meth:`subnet`), as a plain network.

        Returns:
            A new module (switchable BatchNorms turned into plain ones), carrying its pruning
            record (``save_pruned`` works); the supernet is unchanged.

        Example:
            >>> from torchpare.zoo import DigitsCNN
            >>> algo = AutoSlim(DigitsCNN(width=4), {"ratios": [0.5, 1.0]}, input_shape=[1, 1, 8, 8])
            >>> algo.deploy(0.5).layer1.conv.out_channels
            4
        """
        masks = self.to_subnet(channel_cfg)
        cfg = self.pruner.export_subnet(masks) if not (
            isinstance(channel_cfg, Mapping) and "__subnet__" in channel_cfg) else channel_cfg
        with self.subnet(masks, calib_data, num_batches), self.pruner._hooks_suspended():
            clone = copy.deepcopy(self.student)
        to_plain_bn(clone)
        return deploy_subnet(clone, cfg, self.pruner.example_inputs)
