"""BatchNorm with one set of running statistics per width: :class:`SwitchableBatchNorm1d`, ``2d``, ``3d``.

A slimmable network shares its convolution weights between widths, but a layer's input statistics
differ from one width to the next (fewer channels feed each output), so a single set of running
statistics fits none of them (Yu et al., *Slimmable Neural Networks*, 2018). A switchable BatchNorm
keeps one ``running_mean``/``running_var`` per listed width; :meth:`SwitchableBatchNorm.switch`
selects the set the layer uses and updates. The affine weight and bias stay shared (they are masked
like any other parameter of a subnet).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "SwitchableBatchNorm",
    "SwitchableBatchNorm1d",
    "SwitchableBatchNorm2d",
    "SwitchableBatchNorm3d",
    "convert_switchable_bn",
    "switch_bn",
    "to_plain_bn",
]


class SwitchableBatchNorm(_BatchNorm):
    """Base of :class:`SwitchableBatchNorm1d`/``2d``/``3d``: a BatchNorm holding one set of running
    statistics per width of ``widths`` (use it for ``isinstance`` checks; build one of the three).

    ``running_mean``/``running_var``/``num_batches_tracked`` always hold the active width's
    statistics (so every BatchNorm rule and :func:`~torchpare.prune.recalibrate_bn` treat the layer as
    a plain BatchNorm); the other widths' statistics wait in ``stat_means``/``stat_vars``/``stat_counts``.

    Args:
        num_features: Channels.
        widths: The width ratios, one statistics set each (sorted; the last one is active first).
        **kwargs: As the plain BatchNorm (``eps``, ``momentum``, ``affine``).

    Raises:
        ValueError: no widths, or ``track_running_stats=False`` (nothing to switch).

    Example:
        >>> bn = SwitchableBatchNorm2d(2, widths=(0.5, 1.0))
        >>> _ = bn(torch.randn(4, 2, 3, 3) + 5.0)  # trains the statistics of width 1.0
        >>> bn.switch(0.5)
        >>> bn.running_mean.tolist()
        [0.0, 0.0]
        >>> bn.switch(1.0)
        >>> bool(bn.running_mean.mean() > 0.3)
        True
    """

    #: The plain BatchNorm class this one deploys to (:func:`to_plain_bn`).
    plain_type: type[_BatchNorm] = _BatchNorm

    def __init__(self, num_features: int, widths: Sequence[float], **kwargs: Any) -> None:
        who = type(self).__name__
        if type(self) is SwitchableBatchNorm:
            raise TypeError(f"{who} is a base class; build SwitchableBatchNorm1d, 2d or 3d.")
        widths = tuple(sorted({float(w) for w in widths}))
        if not widths:
            raise ValueError(f"{who}: widths must list at least one width ratio.")
        if kwargs.get("track_running_stats") is False:
            raise ValueError(f"{who}: track_running_stats=False keeps no statistics to switch.")
        super().__init__(num_features, **kwargs)
        self.widths = widths
        k = len(widths)
        self.register_buffer("stat_means", torch.zeros(k, num_features))
        self.register_buffer("stat_vars", torch.ones(k, num_features))
        self.register_buffer("stat_counts", torch.zeros(k, dtype=torch.long))
        self.active = k - 1

    def index_of(self, width: float) -> int:
        """The statistics slot of ``width``.

        Raises:
            KeyError: ``width`` is not one of ``widths``.
        """
        for i, w in enumerate(self.widths):
            if abs(w - float(width)) < 1e-9:
                return i
        raise KeyError(
            f"{type(self).__name__}: no statistics for width {width}; widths are {list(self.widths)}. "
            "Recalibrate the statistics of other widths with recalibrate_bn."
        )

    @torch.no_grad()
    def _store(self) -> None:
        self.stat_means[self.active].copy_(self.running_mean)
        self.stat_vars[self.active].copy_(self.running_var)
        self.stat_counts[self.active].copy_(self.num_batches_tracked)

    @torch.no_grad()
    def switch(self, width: float) -> None:
        """Make ``width``'s statistics the active ones (the current ones are stored first)."""
        index = self.index_of(width)
        if index == self.active:
            return
        self._store()
        self.active = index
        # Through ``.data``: autograd may hold these buffers for a pending backward (not read in training).
        self.running_mean.data.copy_(self.stat_means[index])
        self.running_var.data.copy_(self.stat_vars[index])
        self.num_batches_tracked.data.copy_(self.stat_counts[index])

    def get_extra_state(self) -> torch.Tensor:
        self._store()  # the checkpoint holds every width's statistics, the active one included
        return torch.tensor(self.active)

    def set_extra_state(self, state: Any) -> None:
        self.active = int(state)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, widths={list(self.widths)}"


class SwitchableBatchNorm1d(SwitchableBatchNorm, nn.BatchNorm1d):
    """``BatchNorm1d`` (inputs ``(N, C)`` or ``(N, C, L)``) with one set of running statistics per width;
    see :class:`SwitchableBatchNorm`.

    Example:
        >>> bn = SwitchableBatchNorm1d(3, widths=(0.5, 1.0))
        >>> _ = bn(torch.randn(8, 3) - 4.0)  # trains the statistics of width 1.0
        >>> bn.switch(0.5)
        >>> bn.running_mean.tolist()
        [0.0, 0.0, 0.0]
    """

    plain_type = nn.BatchNorm1d


class SwitchableBatchNorm2d(SwitchableBatchNorm, nn.BatchNorm2d):
    """``BatchNorm2d`` with one set of running statistics per width; see :class:`SwitchableBatchNorm`.

    Example:
        >>> bn = SwitchableBatchNorm2d(2, widths=(0.5, 1.0))
        >>> bn.switch(0.5), bn.active
        (None, 0)
    """

    plain_type = nn.BatchNorm2d


class SwitchableBatchNorm3d(SwitchableBatchNorm, nn.BatchNorm3d):
    """``BatchNorm3d`` (inputs ``(N, C, D, H, W)``) with one set of running statistics per width; see
    :class:`SwitchableBatchNorm`.

    Example:
        >>> bn = SwitchableBatchNorm3d(2, widths=(0.5, 1.0))
        >>> bn(torch.randn(2, 2, 3, 3, 3)).shape
        torch.Size([2, 2, 3, 3, 3])
    """

    plain_type = nn.BatchNorm3d


_SWITCHABLE: dict[type[nn.Module], type[SwitchableBatchNorm]] = {
    nn.BatchNorm1d: SwitchableBatchNorm1d,
    nn.BatchNorm2d: SwitchableBatchNorm2d,
    nn.BatchNorm3d: SwitchableBatchNorm3d,
}


def convert_switchable_bn(model: nn.Module, widths: Iterable[float]) -> list[str]:
    """Replace every ``nn.BatchNorm1d``/``2d``/``3d`` of ``model`` (in place) by the matching
    :class:`SwitchableBatchNorm1d`/``2d``/``3d`` with the same parameters and, for every width, a copy
    of its running statistics.

    Other BatchNorm classes that keep running statistics (``SyncBatchNorm``, subclasses) are left as
    they are, with a ``UserWarning`` naming them: their statistics stay shared by every width.

    Returns:
        The names of the replaced layers.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.BatchNorm1d(8))
        >>> convert_switchable_bn(net, (0.5, 1.0)), type(net[1]).__name__, type(net[3]).__name__
        (['1', '3'], 'SwitchableBatchNorm2d', 'SwitchableBatchNorm1d')
    """
    widths = tuple(widths)
    replaced, left = [], []
    for name, module in list(model.named_modules()):
        if not isinstance(module, _BatchNorm) or isinstance(module, SwitchableBatchNorm):
            continue
        cls = _SWITCHABLE.get(type(module))
        if cls is None or not module.track_running_stats:
            if module.track_running_stats:
                left.append(f"{name} ({type(module).__name__})")
            continue
        new = cls(
            module.num_features, widths, eps=module.eps, momentum=module.momentum, affine=module.affine
        ).to(device=module.running_mean.device, dtype=module.running_mean.dtype)
        new.load_state_dict(module.state_dict(), strict=False)
        with torch.no_grad():
            new.stat_means.copy_(module.running_mean.expand_as(new.stat_means))
            new.stat_vars.copy_(module.running_var.expand_as(new.stat_vars))
            new.stat_counts.fill_(int(module.num_batches_tracked))
        new.train(module.training)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
        replaced.append(name)
    if left:
        warnings.warn(
            f"convert_switchable_bn(): {', '.join(left)} not made switchable (only nn.BatchNorm1d/2d/3d are): "
            "their running statistics stay shared by every width; use bn='recalibrate', or replace them by "
            "plain BatchNorm layers first.",
            UserWarning,
            stacklevel=2,
        )
    return replaced


def switch_bn(model: nn.Module, width: float) -> None:
    """Switch every :class:`SwitchableBatchNorm` of ``model`` to ``width``'s statistics."""
    for module in model.modules():
        if isinstance(module, SwitchableBatchNorm):
            module.switch(width)


def to_plain_bn(model: nn.Module) -> nn.Module:
    """Replace every :class:`SwitchableBatchNorm` (in place) by the plain ``nn.BatchNorm1d``/``2d``/``3d``
    holding its active statistics, so the model deploys and saves as a plain network; returns ``model``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), SwitchableBatchNorm2d(2, widths=(1.0,)))
        >>> type(to_plain_bn(net)[1]).__name__
        'BatchNorm2d'
    """
    for name, module in list(model.named_modules()):
        if not isinstance(module, SwitchableBatchNorm):
            continue
        plain = module.plain_type(module.num_features, eps=module.eps, momentum=module.momentum,
                                  affine=module.affine)
        plain = plain.to(device=module.running_mean.device, dtype=module.running_mean.dtype)
        state = {k: v for k, v in module.state_dict().items()
                 if not k.startswith("stat_") and k != "_extra_state"}
        plain.load_state_dict(state)
        plain.train(module.training)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, plain)
    return model
