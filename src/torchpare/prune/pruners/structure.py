"""Channel spaces and subnets over one supernet: :class:`StructurePruner` and its samplers.

Every prunable :class:`~torchpare.prune.ChannelGroup` of the model is one *space*; a *subnet* maps
space ids to boolean masks over the group's units (channels or heads). ``set_subnet`` applies masks
in place without changing any shape (masked units are zeroed where consumers read them, which keeps
the supernet exactly equal to the deployed model, see ``_masking.py``, and where their producers
output them, so recorded features lack them too, see ``_producer_masking.py``), so many subnets can
be trained inside one supernet; ``export_subnet`` and
:func:`~torchpare.prune.deploy_subnet` turn a subnet into a physically smaller model that computes
the same outputs as the masked supernet.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

import torchpare.prune.ignored as _ignored
from torchpare._utils import did_you_mean
from torchpare.prune.counting import module_channels
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.history import input_spec
from torchpare.prune.pruners._masking import InputMasker, consumer_sites, member_owner
from torchpare.prune.pruners._producer_masking import OutputMasker, producer_sites
from torchpare.prune.pruners.deploy import deploy_subnet
from torchpare.prune.widths import auto_divisor, ratio_width
from torchpare.registry import PRUNERS

if TYPE_CHECKING:
    from torchpare.prune.graph import ChannelGroup
    from torchpare.prune.pruners._masking import ConsumerSite
    from torchpare.prune.pruners._producer_masking import ProducerSite

__all__ = ["StructurePruner", "RatioPruner", "RandomPruner"]

_DEFAULT_EXCEPT = ("head.fc",)
Subnet = dict[str, torch.Tensor]


def _as_mask(value: Any, size: int, space: str, who: str) -> torch.Tensor:
    mask = torch.as_tensor(value).detach().flatten().cpu()
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{who}: mask of space {space!r} must hold only 0/1 or booleans.")
        mask = mask.bool()
    if mask.numel() != size:
        raise ValueError(
            f"{who}: mask of space {space!r} has {mask.numel()} entries but the space has {size} units."
        )
    if not bool(mask.any()):
        raise ValueError(f"{who}: the mask of space {space!r} removes all {size} units; keep at least one.")
    return mask


@PRUNERS.register()
class StructurePruner:
    """Channel spaces over a model, with subnets applied as masks and exported as smaller models.

    Args:
        model: The supernet (kept in place; hooks are added only while a subnet is set).
        example_inputs: Inputs to trace the dependency graph (tensor, tuple, or dict of kwargs).
        ignored: Module names (or modules) whose output channels are not pruned.
        except_start_keys: Prefixes of module names excluded as well (MMRazor style); the default
            ``("head.fc",)`` is skipped silently on models without such a module.

    Raises:
        ValueError: the model has no prunable group, or an exclusion names no module.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> pruner = StructurePruner(net, torch.randn(1, 4))
        >>> (space,) = pruner.channel_spaces  # the 8 hidden units
        >>> pruner.set_subnet({space: torch.arange(8) < 3})
        >>> cfg = pruner.export_subnet()
        >>> cfg["0"]["out_channels"], cfg["0"]["raw_out_channels"], cfg["2"]["in_channels"]
        (3, 8, 3)
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ignored: Iterable[str | nn.Module] | None = None,
        except_start_keys: Sequence[str] | None = _DEFAULT_EXCEPT,
    ) -> None:
        who = type(self).__name__
        self.model = model
        self.example_inputs = example_inputs
        self.ignored = sorted(
            _ignored.resolve_ignored(
                model, ignored, except_start_keys, who, strict_keys=except_start_keys is not _DEFAULT_EXCEPT
            )
        )
        self.graph = DependencyGraph.build(model, example_inputs, ignored=tuple(self.ignored))
        self.groups: dict[str, ChannelGroup] = {}  # space id -> its channel group
        self.skipped: dict[str, str] = {}  # group id -> why it is not a space
        sites: dict[str, list[ConsumerSite]] = {}
        producers: dict[str, list[ProducerSite]] = {}
        for group in self.graph.groups():
            if not group.exact:
                self.skipped[group.id] = "masking is not exact for it (e.g. it passes through a LayerNorm)"
                continue
            try:
                group_sites = consumer_sites(model, group, who)
            except ValueError as exc:
                self.skipped[group.id] = str(exc)
                continue
            if not group_sites:
                self.skipped[group.id] = "no layer reads its units, so masking it changes nothing"
                continue
            self.groups[group.id] = group
            sites[group.id] = group_sites
            producers[group.id] = producer_sites(model, group, who)
        if not self.groups:
            raise ValueError(
                f"{who}: {type(model).__name__} has no channel group that can be masked "
                f"(skipped: {self.skipped or 'none'}).\n{self.graph.report()}"
            )
        self._masker = InputMasker(model, sites)
        self._zeroer = OutputMasker(model, producers)
        self._subnet: Subnet = self.max_subnet()

    # -- spaces and subnets ---------------------------------------------------------------------
    @property
    def channel_spaces(self) -> Subnet:
        """``{space_id: all-True bool mask}``: one space per maskable channel group."""
        return {gid: torch.ones(g.size, dtype=torch.bool) for gid, g in self.groups.items()}

    @property
    def current_subnet(self) -> Subnet:
        """The masks now applied (copies)."""
        return {gid: m.clone() for gid, m in self._subnet.items()}

    def max_subnet(self) -> Subnet:
        """Every unit kept."""
        return self.channel_spaces

    def _min_keep(self, size: int) -> int:
        return 1

    def min_subnet(self) -> Subnet:
        """The smallest subnet of each space (kept units first)."""
        return {gid: torch.arange(g.size) < self._min_keep(g.size) for gid, g in self.groups.items()}

    def sample_subnet(self, generator: torch.Generator | None = None) -> Subnet:
        """A random subnet: per space a uniform keep count, then that many random units."""
        subnet = {}
        for gid, g in self.groups.items():
            low = self._min_keep(g.size)
            keep = int(torch.randint(low, g.size + 1, (1,), generator=generator))
            chosen = torch.randperm(g.size, generator=generator)[:keep]
            mask = torch.zeros(g.size, dtype=torch.bool)
            mask[chosen] = True
            subnet[gid] = mask
        return subnet

    def check_subnet(self, subnet: Mapping[str, Any]) -> Subnet:
        """Validate ``subnet`` and return it as bool masks (spaces it omits keep every unit).

        Raises:
            KeyError: an unknown space id (naming the closest ones).
            ValueError: a mask of the wrong length, with values other than 0/1, or removing all units.
        """
        who = f"{type(self).__name__}.set_subnet()"
        if not isinstance(subnet, Mapping):
            raise TypeError(f"{who}: a subnet is a dict {{space_id: mask}}, got {type(subnet).__name__}.")
        out = self.max_subnet()
        for gid, value in subnet.items():
            if gid not in self.groups:
                hint = f" (skipped: {self.skipped[gid]})" if gid in self.skipped else ""
                raise KeyError(
                    f"{who}: unknown space {gid!r}{hint}; spaces are {', '.join(self.groups)}"
                    f"{did_you_mean(str(gid), self.groups)}"
                )
            out[gid] = _as_mask(value, self.groups[gid].size, gid, who)
        return out

    def set_subnet(self, subnet: Mapping[str, Any], zero_outputs: bool = True) -> None:
        """Apply ``subnet`` in place through hooks, without changing any shape.

        Masked units are zero in two places:

        * at the **consumer inputs**: every layer reading the group (next conv/linear, attention
          output projection) multiplies its input by the mask, so the network output equals the
          deployed (physically pruned) model's;
        * at the **producer outputs**: every conv, linear, BatchNorm/GroupNorm/LayerNorm, embedding
          or transformers ``Conv1D`` computing the group (q/k/v projections for heads) multiplies its
          output by the mask, so recorded features lack the masked channels and they get no gradient.

        Activations with ``f(0) = 0`` (ReLU, GELU, SiLU, tanh) and residual sums of zeroed branches
        keep the zeros. Exceptions, which the next consumer still reads as zeros: an op with
        ``f(0) != 0`` (sigmoid: 0.5) outputs that value on masked channels, a masked head's
        attention probabilities are uniform (its context output is zero), and outputs of layers
        not listed above (custom modules, free parameters) keep masked units. In training mode,
        masked BatchNorm channels keep their running statistics. The producer hooks run before
        hooks registered earlier, so recorders attached before this call see the zeros too. Undo
        with :meth:`set_max_channel` (or leave the ``with`` block, also on an exception).

        With ``zero_outputs=False`` only the consumer inputs are masked: network outputs are still
        exactly the deployed model's and masked units still get no gradient, but intermediate features
        keep masked channels and training-mode BatchNorm statistics of masked channels move. It saves
        one multiplication per producer (slimmable training uses it; evaluation should not).

        Raises:
            KeyError, ValueError: see :meth:`check_subnet`.

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
            >>> pruner = StructurePruner(net, torch.randn(1, 4))
            >>> (space,) = pruner.channel_spaces
            >>> pruner.set_subnet({space: torch.arange(6) < 2})
            >>> net[0](torch.randn(3, 4))[:, 2:].abs().sum().item()
            0.0
            >>> pruner.set_max_channel()
        """
        masks = self.check_subnet(subnet)
        try:
            self._masker.set_masks(masks)
            if zero_outputs:
                self._zeroer.set_masks(masks)
            else:
                self._zeroer.remove()
        except BaseException:
            self._masker.remove()
            self._zeroer.remove()
            self._subnet = self.max_subnet()
            raise
        self._subnet = masks

    def set_max_channel(self) -> None:
        """Keep every unit: removes every masking hook, so outputs equal the unmasked model's exactly."""
        self._masker.remove()
        self._zeroer.remove()
        self._subnet = self.max_subnet()

    def set_min_channel(self) -> None:
        """Apply :meth:`min_subnet`."""
        self.set_subnet(self.min_subnet())

    def remove_hooks(self) -> None:
        """Alias of :meth:`set_max_channel`; call when done with the pruner."""
        self.set_max_channel()

    def __enter__(self) -> StructurePruner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()

    # -- bins -------------------------------------------------------------------------------------
    def _bin_index(self, gid: str, max_channel_bins: int, who: str) -> torch.Tensor:
        size = self.groups[gid].size
        if max_channel_bins > size:
            raise ValueError(
                f"{who}: space {gid!r} has {size} units, fewer than max_channel_bins={max_channel_bins}."
            )
        # Near-equal contiguous bins (equal when size is a multiple of max_channel_bins).
        return torch.arange(size) * max_channel_bins // size

    def get_max_channel_bins(self, max_channel_bins: int) -> Subnet:
        """``{space_id: all-True bool[max_channel_bins]}``: every bin switched on.

        Raises:
            ValueError: ``max_channel_bins < 1`` or larger than a space's size.
        """
        who = f"{type(self).__name__}.get_max_channel_bins()"
        if int(max_channel_bins) < 1:
            raise ValueError(f"{who}: max_channel_bins must be >= 1, got {max_channel_bins}.")
        for gid in self.groups:
            self._bin_index(gid, max_channel_bins, who)
        return {gid: torch.ones(max_channel_bins, dtype=torch.bool) for gid in self.groups}

    def set_channel_bins(self, channel_bins: Mapping[str, Any], max_channel_bins: int) -> None:
        """Switch bins on/off: each space's units are split into ``max_channel_bins`` contiguous bins.

        Raises:
            KeyError: unknown space. ValueError: wrong number of bins, or all bins off.
        """
        who = f"{type(self).__name__}.set_channel_bins()"
        subnet = {}
        for gid, bins in channel_bins.items():
            if gid not in self.groups:
                raise KeyError(f"{who}: unknown space {gid!r}{did_you_mean(str(gid), self.groups)}")
            bin_mask = _as_mask(bins, max_channel_bins, gid, who)
            subnet[gid] = bin_mask[self._bin_index(gid, max_channel_bins, who)]
        self.set_subnet(subnet)

    # -- export -----------------------------------------------------------------------------------
    @contextmanager
    def _hooks_suspended(self) -> Any:
        masks = self._subnet
        self._masker.remove()
        self._zeroer.remove()
        try:
            yield
        finally:
            self._masker.set_masks(masks)
            self._zeroer.set_masks(masks)

    def export_subnet(self, subnet: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The channel config of ``subnet`` (default: the current one), JSON-serialisable.

        Returns:
            ``{module_name: {"in_channels", "out_channels", "raw_in_channels", "raw_out_channels"}}``
            for every module touched by a space, plus the key ``"__subnet__"`` holding what
            :func:`deploy_subnet` needs: per space the kept unit indices and size, the ignored
            modules and the example-input spec.
        """
        masks = self.current_subnet if subnet is None else self.check_subnet(subnet)
        groups = {
            gid: {
                "size": self.groups[gid].size,
                "unit": self.groups[gid].unit,
                "kept": mask.nonzero().flatten().tolist(),
            }
            for gid, mask in masks.items()
        }
        meta = {
            "groups": groups,
            "ignored": list(self.ignored),
            "example_inputs": input_spec(self.example_inputs),
        }
        names = sorted({member_owner(m)[0] for g in self.groups.values() for m in g.members})
        with self._hooks_suspended():
            raw = {n: module_channels(self.model.get_submodule(n)) for n in names}
            clone = copy.deepcopy(self.model)
        pruned = deploy_subnet(clone, {"__subnet__": meta}, self.example_inputs)
        cfg: dict[str, Any] = {}
        for name in names:
            before, after = raw[name], module_channels(pruned.get_submodule(name))
            if before is None or after is None:
                continue
            cfg[name] = {
                "in_channels": after[0],
                "out_channels": after[1],
                "raw_in_channels": before[0],
                "raw_out_channels": before[1],
            }
        cfg["__subnet__"] = meta
        return cfg

    # -- the seed's names (MMRazor's StructurePruner API) -----------------------------------------
    def deploy_subnet(
        self, supernet: nn.Module, channel_cfg: Mapping[str, Any], example_inputs: Any = None
    ) -> nn.Module:
        """Physically prune ``supernet`` in place to ``channel_cfg``: :func:`~torchpare.prune.deploy_subnet`
        with this pruner's example inputs by default.

        ``channel_cfg`` may lack the ``"__subnet__"`` entry (MMRazor's AutoSlim configs): each space
        then keeps the first ``out_channels`` channels of the modules it names.

        Raises:
            ValueError: this pruner's masks are still set on ``supernet`` (call :meth:`set_max_channel`
                first), or see :func:`~torchpare.prune.deploy_subnet`.

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> pruner = RatioPruner(net, torch.randn(1, 4), ratios=(0.5, 1.0))
            >>> cfg = pruner.export_subnet(pruner.ratio_subnet(0.5))
            >>> pruner.deploy_subnet(net, cfg)[0].out_features
            4
        """
        from torchpare.prune.pruners.deploy import deploy_subnet

        if supernet is self.model and (self._masker.active or self._zeroer.active):
            raise ValueError(
                f"{type(self).__name__}.deploy_subnet(): the supernet still has this pruner's subnet masks "
                "set; call set_max_channel() first (deploying changes shapes under the masking hooks)."
            )
        return deploy_subnet(supernet, channel_cfg, self.example_inputs if example_inputs is None else example_inputs)

    def prepare_from_supernet(self, supernet: nn.Module) -> StructurePruner:
        """(Re)build the channel spaces on ``supernet`` with this pruner's settings; returns ``self``.

        The constructor already prepares the model it is given; this is MMRazor's name for doing it
        again on another instance of the architecture (masks on the old model are removed first).

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> pruner = StructurePruner(net, torch.randn(1, 4))
            >>> other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> pruner.prepare_from_supernet(other).model is other
            True
        """
        self.set_max_channel()
        StructurePruner.__init__(self, supernet, self.example_inputs, ignored=self.ignored, except_start_keys=())
        return self

    def get_space_id(self, module_name: str) -> str | None:
        """The id of the space whose units ``module_name`` computes (``None`` when it computes none).

        Raises:
            KeyError: ``module_name`` is no module of the model.

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> pruner = StructurePruner(net, torch.randn(1, 4))
            >>> pruner.get_space_id("0"), pruner.get_space_id("2")
            ('0', None)
        """
        names = [n for n, _ in self.model.named_modules()]
        if module_name not in names:
            raise KeyError(
                f"{type(self).__name__}.get_space_id(): no module {module_name!r} in "
                f"{type(self.model).__name__}{did_you_mean(module_name, names)}"
            )
        for gid, group in self.groups.items():
            if any(m.role == "out" and member_owner(m)[0] == module_name for m in group.members):
                return gid
        return None

    def subnet_from_channel_cfg(self, channel_cfg: Mapping[str, Any]) -> Subnet:
        """The masks of a channel config (with ``"__subnet__"``: its kept units; without: per space the
        first units, as many as the ``out_channels`` of the modules computing it).

        Raises:
            KeyError, ValueError: see :func:`~torchpare.prune.pruners.channel_cfg.subnet_meta_from_channels`.

        Example:
            >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> pruner = StructurePruner(net, torch.randn(1, 4))
            >>> cfg = {"0": {"in_channels": 4, "out_channels": 3, "raw_in_channels": 4, "raw_out_channels": 8}}
            >>> pruner.subnet_from_channel_cfg(cfg)["0"].int().tolist()
            [1, 1, 1, 0, 0, 0, 0, 0]
        """
        from torchpare.prune.pruners.channel_cfg import subnet_meta_from_channels

        groups = channel_cfg["__subnet__"]["groups"] if "__subnet__" in channel_cfg else (
            subnet_meta_from_channels(self.groups.values(), channel_cfg, f"{type(self).__name__}")
        )
        out = {}
        for gid, space in groups.items():
            if gid not in self.groups:
                continue  # spaces this pruner leaves whole (ignored modules) are checked by check_subnet
            mask = torch.zeros(self.groups[gid].size, dtype=torch.bool)
            mask[[int(i) for i in space["kept"]]] = True
            out[gid] = mask
        return self.check_subnet(out)


@PRUNERS.register()
class RatioPruner(StructurePruner):
    """Samples one width ratio per space from ``ratios``; kept units come first (slimmable style).

    Args:
        model: As in :class:`StructurePruner`.
        example_inputs: As in :class:`StructurePruner`.
        ignored: As in :class:`StructurePruner`.
        except_start_keys: As in :class:`StructurePruner`.
        ratios: Candidate width ratios in ``(0, 1]``; a space of ``n`` units keeps ``ceil(r * n)``.
        divisor: Kept units are rounded up to a multiple of ``divisor`` (hardware-friendly widths;
            a space keeps all its units when the rounded count would exceed them). ``"auto"`` (the
            default): per space, the multiple ``prune()`` keeps (16 from 16 channels, 4 from 8), halved
            until it neither merges two ratios nor grows a ratio's width by more than a quarter
            (:func:`~torchpare.prune.widths.auto_divisor`; :meth:`divisor_of` tells a space's multiple).
            ``1``: exact ``ceil(ratio * size)`` counts.

    Raises:
        ValueError: an empty ``ratios``, a ratio outside ``(0, 1]``, or a ``divisor`` that is neither
            ``"auto"`` nor a positive int.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> pruner = RatioPruner(net, torch.randn(1, 4), ratios=(0.5, 1.0))
        >>> pruner.set_min_channel()
        >>> [mask.int().tolist() for mask in pruner.current_subnet.values()]
        [[1, 1, 1, 1, 0, 0, 0, 0]]
    """

    #: The width ratios a pruner built without ``ratios`` samples (slimmable networks' quarter widths).
    DEFAULT_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        ignored: Iterable[str | nn.Module] | None = None,
        except_start_keys: Sequence[str] | None = _DEFAULT_EXCEPT,
        divisor: int | Literal["auto"] = "auto",
    ) -> None:
        problems = self.argument_errors(ratios, divisor)
        if problems:
            raise ValueError("; ".join(f"RatioPruner: {key} {message}" for key, message in problems) + ".")
        ratios = tuple(float(r) for r in ratios)
        self.ratios = tuple(sorted(set(ratios)))
        self.divisor = divisor
        super().__init__(model, example_inputs, ignored=ignored, except_start_keys=except_start_keys)

    @staticmethod
    def argument_errors(ratios: Any = DEFAULT_RATIOS, divisor: Any = "auto") -> list[tuple[str, str]]:
        """Every problem of ``ratios`` and ``divisor``, without building anything: ``[(argument, message)]``
        (what the constructor raises on, and what config validation reports up front).

        Example:
            >>> RatioPruner.argument_errors(ratios=[0.5, 1.5], divisor=0)
            [('ratios', 'must be a non-empty sequence of numbers in (0, 1], got [0.5, 1.5]'), ('divisor', 'must be "auto" or a positive int, got 0 (1 keeps exact ceil(ratio * size) counts)')]
        """
        problems = []
        numbers = isinstance(ratios, Sequence) and not isinstance(ratios, str) and all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in ratios
        )
        if not numbers or not ratios or any(not 0.0 < float(r) <= 1.0 for r in ratios):
            problems.append(("ratios", f"must be a non-empty sequence of numbers in (0, 1], got {ratios!r}"))
        if divisor != "auto" and (isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1):
            problems.append(
                ("divisor", f'must be "auto" or a positive int, got {divisor!r} (1 keeps exact ceil(ratio * size) counts)')
            )
        return problems

    def divisor_of(self, size: int) -> int:
        """The multiple a space of ``size`` units keeps: ``divisor``, or under ``"auto"``
        :func:`~torchpare.prune.widths.auto_divisor` of ``size`` and this pruner's ratios (computed once
        per size: every sampled subnet asks for every space)."""
        divisor = getattr(self, "divisor", 1)
        if divisor != "auto":
            return divisor
        cache: dict[tuple[int, tuple[float, ...]], int] = self.__dict__.setdefault("_auto_divisors", {})
        key = (size, self.ratios)
        if key not in cache:
            cache[key] = auto_divisor(size, self.ratios)
        return cache[key]

    def _keep(self, size: int, ratio: float) -> int:
        return ratio_width(size, ratio, self.divisor_of(size))

    def _min_keep(self, size: int) -> int:
        return self._keep(size, self.ratios[0])

    def ratio_subnet(self, ratio: float | Mapping[str, float]) -> Subnet:
        """The subnet keeping the first ``ceil(ratio * size)`` units of each space."""
        out = {}
        for gid, g in self.groups.items():
            r = ratio[gid] if isinstance(ratio, Mapping) else ratio
            out[gid] = torch.arange(g.size) < self._keep(g.size, float(r))
        return out

    def sample_subnet(self, generator: torch.Generator | None = None) -> Subnet:
        """One ratio per space, drawn uniformly from ``ratios``."""
        picks = torch.randint(len(self.ratios), (len(self.groups),), generator=generator).tolist()
        return self.ratio_subnet({gid: self.ratios[i] for gid, i in zip(self.groups, picks)})


@PRUNERS.register()
class RandomPruner(StructurePruner):
    """Samples random masks: each space keeps a uniform fraction in ``keep_range`` of random units.

    Args:
        model: As in :class:`StructurePruner`.
        example_inputs: As in :class:`StructurePruner`.
        ignored: As in :class:`StructurePruner`.
        except_start_keys: As in :class:`StructurePruner`.
        keep_range: ``(low, high)`` fractions of units kept, ``0 < low <= high <= 1``.

    Raises:
        ValueError: an invalid ``keep_range``.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        keep_range: tuple[float, float] = (0.25, 1.0),
        ignored: Iterable[str | nn.Module] | None = None,
        except_start_keys: Sequence[str] | None = _DEFAULT_EXCEPT,
    ) -> None:
        low, high = (float(v) for v in keep_range)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"RandomPruner: keep_range must satisfy 0 < low <= high <= 1, got {keep_range}.")
        self.keep_range = (low, high)
        super().__init__(model, example_inputs, ignored=ignored, except_start_keys=except_start_keys)

    def _min_keep(self, size: int) -> int:
        return max(1, math.ceil(self.keep_range[0] * size - 1e-9))

    def sample_subnet(self, generator: torch.Generator | None = None) -> Subnet:
        """Per space: a uniform keep count in ``keep_range``, then that many random units."""
        subnet = {}
        for gid, g in self.groups.items():
            low = self._min_keep(g.size)
            high = max(low, math.floor(self.keep_range[1] * g.size + 1e-9))
            keep = int(torch.randint(low, high + 1, (1,), generator=generator))
            mask = torch.zeros(g.size, dtype=torch.bool)
            mask[torch.randperm(g.size, generator=generator)[:keep]] = True
            subnet[gid] = mask
        return subnet


def __getattr__(name: str) -> Any:
    if name == "resolve_ignored":  # one resolver for every entry point now
        warnings.warn(
            "torchpare.prune.pruners.structure.resolve_ignored moved to torchpare.prune.ignored.resolve_ignored "
            "(it returns names in the order given; sort them if you relied on sorted output).",
            FutureWarning,
            stacklevel=2,
        )
        return _ignored.resolve_ignored
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
