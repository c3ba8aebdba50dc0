"""Channel/head importance criteria, each a registered class scoring every unit of a channel group.

A criterion only says how to score the slice one group member owns (:meth:`GroupImportance.member_scores`,
one value per index along the member's channel dim); the shared helper :func:`reduce_group` sums those
values over each unit's indices (a head spans ``head_dim`` rows) and reduces over the members of the
group with ``"mean"``, ``"sum"`` or ``"max"``. Scores are then normalised per group (``normalize``),
so one global ranking compares layers of different sizes.

Data-dependent criteria (Taylor, GroupFisher) are first given calibration batches with
:meth:`GroupImportance.prepare`: any iterable of batches, plus either ``loss_fn(outputs, targets)``
for ``(inputs, targets)`` batches or ``batch_loss(model, batch) -> loss``; Hugging Face batches that
hold ``labels`` need neither (``model(**batch).loss`` is used).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchpare.prune.graph import DependencyGraph
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0] * 4, [0.1] * 4, [2.0] * 4]))
    >>> (group,) = DependencyGraph.build(net, torch.randn(1, 4)).groups()
    >>> L1Importance(normalize=None, members="out")(net, group)
    tensor([4.0000, 0.4000, 8.0000])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from torchpare._utils import get_submodule
from torchpare.model_io import call_model
from torchpare.prune.pruners._masking import consumer_sites, site_input, unit_index
from torchpare.registry import IMPORTANCES

# The registered criteria only: ``torchpare.prune.<Name>`` resolves through this list. The base class
# and helpers (GroupImportance, reduce_group, sum_units, batch_loss, build_importance) are imported
# from this module directly.
__all__ = [
    "L1Importance",
    "L2Importance",
    "BNScaleImportance",
    "TaylorImportance",
    "GroupFisherImportance",
    "RandomImportance",
]

_REDUCTIONS = ("mean", "sum", "max")
_NORMALIZERS = (None, "mean", "max", "sum")
_SKIPPED_PARAMS = ("bias", "running_mean", "running_var", "num_batches_tracked")


def _leaf(member: Any) -> str:
    return str(member.param_name).rsplit(".", 1)[-1]


def _owner(member: Any) -> tuple[str, str]:
    # Rules may name a descendant's parameter ("o_proj.weight" on an attention module).
    full = f"{member.module_name}.{member.param_name}" if member.module_name else member.param_name
    path, _, leaf = full.rpartition(".")
    return path, leaf


def _tensor_of(model: nn.Module, member: Any) -> torch.Tensor | None:
    path, leaf = _owner(member)
    tensor = getattr(get_submodule(model, path, "importance"), leaf, None)
    return tensor if isinstance(tensor, torch.Tensor) else None


def sum_units(values: torch.Tensor, index_map: tuple[tuple[int, ...], ...], dim: int = -1) -> torch.Tensor:
    """Sum ``values`` along ``dim`` over each unit's indices: the result has ``len(index_map)`` there."""
    flat, units = unit_index(index_map)
    flat, units = flat.to(values.device), units.to(values.device)
    dim = dim % values.ndim
    shape = list(values.shape)
    shape[dim] = len(index_map)
    return values.new_zeros(shape).index_add_(dim, units, values.index_select(dim, flat))


def _per_index(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``values`` over every dim but ``dim``."""
    return values.movedim(dim, 0).reshape(values.shape[dim], -1).sum(1)


def reduce_group(
    model: nn.Module,
    group: Any,
    member_scores: Callable[[Any, torch.Tensor], torch.Tensor | None],
    reduction: str = "mean",
) -> torch.Tensor | None:
    """Score each unit of ``group``: ``member_scores(member, tensor)`` per member, summed over every
    unit's indices, then reduced over the members.

    Args:
        model: The model owning the group's tensors.
        group: A :class:`~torchpare.prune.ChannelGroup`.
        member_scores: Returns one score per index along ``member.dim`` of ``tensor``, or ``None``
            to leave the member out.
        reduction: ``"mean"``, ``"sum"`` or ``"max"`` over members.

    Returns:
        A float tensor of ``group.size`` scores, or ``None`` when no member was scored.
    """
    rows = []
    for member in group.members:
        tensor = _tensor_of(model, member)
        if tensor is None:
            continue
        per_index = member_scores(member, tensor)
        if per_index is None:
            continue
        rows.append(sum_units(per_index.detach().float().cpu(), member.index_map))
    if not rows:
        return None
    stacked = torch.stack(rows)
    if reduction == "sum":
        return stacked.sum(0)
    if reduction == "max":
        return stacked.max(0).values
    return stacked.mean(0)


def batch_loss(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    batch_loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The loss of one calibration batch.

    ``batch_loss_fn(model, batch)`` when given; else ``loss_fn(outputs, targets)`` for a batch
    ``(inputs, targets)`` (``inputs`` a tensor, tuple or dict of kwargs; Hugging Face outputs give
    their ``logits``); else ``model(**batch).loss`` for a dict batch.

    Raises:
        TypeError: the batch does not fit any of these forms.
    """
    if batch_loss_fn is not None:
        return batch_loss_fn(model, batch)
    if loss_fn is not None:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(
                "batch_loss(): with loss_fn, batches must be (inputs, targets) pairs; got "
                f"{type(batch).__name__}. Pass batch_loss=lambda model, batch: ... for other layouts."
            )
        inputs, targets = batch
        outputs = call_model(model, inputs)
        # not model_io.logits_of: any other output (a tuple, a custom object) goes to the user's loss_fn as is
        outputs = getattr(outputs, "logits", outputs)
        return loss_fn(outputs, targets)
    if isinstance(batch, Mapping):
        out = call_model(model, batch)
        loss = getattr(out, "loss", None)
        if isinstance(loss, torch.Tensor):
            return loss
    raise TypeError(
        "batch_loss(): cannot compute a loss: pass loss_fn(outputs, targets) for (inputs, targets) "
        "batches, or batch_loss(model, batch), or dict batches with labels for a Hugging Face model."
    )


class GroupImportance:
    """Base class: scores the units of a channel group (higher = more important).

    Args:
        reduction: How member scores combine: ``"mean"``, ``"sum"`` or ``"max"``.
        normalize: Per-group normalisation of the scores: ``"mean"`` (divide by the group mean, so a
            global ranking compares layers fairly), ``"max"``, ``"sum"`` or ``None``.
        members: Which members are scored: ``"all"`` (producers and consumers), ``"out"`` or ``"in"``.

    Raises:
        ValueError: an unknown reduction, normalisation or member selection.
    """

    requires_data = False

    def __init__(self, reduction: str = "mean", normalize: str | None = "mean", members: str = "all") -> None:
        who = type(self).__name__
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{who}: reduction={reduction!r}; choose one of {_REDUCTIONS}.")
        if normalize not in _NORMALIZERS:
            raise ValueError(f"{who}: normalize={normalize!r}; choose one of {_NORMALIZERS}.")
        if members not in ("all", "out", "in"):
            raise ValueError(f"{who}: members={members!r}; choose 'all', 'out' or 'in'.")
        self.reduction, self.normalize, self.members = reduction, normalize, members
        self._collected: dict[str, torch.Tensor] = {}

    def prepare(
        self,
        model: nn.Module,
        data: Iterable[Any] | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        batch_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        graph: Any = None,
    ) -> None:
        """Collect whatever the criterion needs from calibration data (nothing for magnitude criteria):
        what :meth:`_collect` returns, kept until the next ``prepare``."""
        self._collected = {}  # the previous sums go before the new calibration allocates its own
        self._collected = self._collect(model, data, loss_fn, batch_loss, graph)

    def _collect(self, model: nn.Module, data: Any, loss_fn: Any, batch_loss: Any, graph: Any) -> dict[str, Any]:
        """Data-dependent criteria (``requires_data = True``) compute their per-name tensors here."""
        return {}

    def member_scores(self, member: Any, tensor: torch.Tensor) -> torch.Tensor | None:
        """One score per index along ``member.dim`` of ``tensor`` (``None`` skips the member)."""
        raise NotImplementedError

    def _selected(self, member: Any) -> bool:
        if _leaf(member) in _SKIPPED_PARAMS:
            return False
        return self.members == "all" or member.role == self.members

    def raw_scores(self, model: nn.Module, group: Any) -> torch.Tensor | None:
        """Unnormalised unit scores of ``group`` (``None``: the criterion cannot score it)."""

        def score(member: Any, tensor: torch.Tensor) -> torch.Tensor | None:
            return self.member_scores(member, tensor) if self._selected(member) else None

        return reduce_group(model, group, score, self.reduction)

    def __call__(self, model: nn.Module, group: Any) -> torch.Tensor | None:
        """Normalised unit scores of ``group``, a float tensor of ``group.size`` (or ``None``)."""
        scores = self.raw_scores(model, group)
        if scores is None or self.normalize is None:
            return scores
        if self.normalize == "mean":
            denom = scores.mean()
        elif self.normalize == "max":
            denom = scores.max()
        else:
            denom = scores.sum()
        return scores / denom if float(denom) > 0 else scores


@IMPORTANCES.register(aliases=("l1", "L1", "magnitude"))
class L1Importance(GroupImportance):
    """Sum of absolute weights of every unit's slices (producers' rows and consumers' columns)."""

    def member_scores(self, member: Any, tensor: torch.Tensor) -> torch.Tensor:
        return _per_index(tensor.detach().abs(), member.dim)


@IMPORTANCES.register(aliases=("l2", "L2"))
class L2Importance(GroupImportance):
    """Sum of squared weights of every unit's slices."""

    def member_scores(self, member: Any, tensor: torch.Tensor) -> torch.Tensor:
        return _per_index(tensor.detach().float().pow(2), member.dim)


@IMPORTANCES.register(aliases=("bn_scale", "bn", "BNScale"))
class BNScaleImportance(GroupImportance):
    """``|gamma|`` of the normalisation layers (BatchNorm, GroupNorm, LayerNorm...) in the group.

    Groups without a normalisation layer get ``None`` (they are not ranked by this criterion).
    """

    _NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

    def raw_scores(self, model: nn.Module, group: Any) -> torch.Tensor | None:
        def score(member: Any, tensor: torch.Tensor) -> torch.Tensor | None:
            module = get_submodule(model, _owner(member)[0], "BNScaleImportance")
            if member.role != "out" or _leaf(member) != "weight" or not isinstance(module, self._NORMS):
                return None
            return tensor.detach().abs()

        return reduce_group(model, group, score, self.reduction)


def _calibrate(
    model: nn.Module,
    data: Iterable[Any] | None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    batch_loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None,
    who: str,
    after_backward: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run forward/backward over ``data`` in eval mode; returns ``{param_name: grad summed over batches}``.

    Memory stays bounded whatever the number of batches: one gradient per parameter, no per-sample
    gradients. Parameters in a half-precision dtype (bf16/fp16) have their gradient folded after each
    backward into a float32 sum (so the sum does not lose precision batch after batch); float32 and
    float64 parameters sum in their own ``.grad``. The returned sums are float32 for half-precision
    parameters. The model's mode, ``requires_grad`` flags and existing ``.grad`` values are restored
    afterwards.
    """
    if data is None:
        raise ValueError(f"{who}: needs calibration data: pass data=<iterable of batches> (and a loss).")
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    low = [i for i, p in enumerate(params) if p.is_floating_point() and torch.finfo(p.dtype).bits < 32]
    sums: dict[int, torch.Tensor] = {}  # float32 sums of the half-precision parameters' gradients

    def fold_low_precision() -> None:
        for i in low:
            grad = params[i].grad
            if grad is None:
                continue
            total = sums.get(i)
            if total is None:
                sums[i] = grad.to(torch.float32)
            else:
                total.add_(grad)  # promoted: the sum stays float32
            params[i].grad = None

    was_training = model.training
    seen = 0
    try:
        model.eval()  # no BatchNorm statistic updates while scoring
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        for batch in data:
            loss = batch_loss(model, batch, loss_fn, batch_loss_fn)
            loss.backward()
            del loss  # frees the graph before the next batch's forward
            if low:
                fold_low_precision()
            if after_backward is not None:
                after_backward()
            seen += 1
    finally:
        grads = [sums.get(i, p.grad) for i, p in enumerate(params)]
        for p, (flag, grad) in zip(params, saved):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    if seen == 0:
        raise ValueError(f"{who}: the calibration data yielded no batch.")
    by_id = {id(p): g for p, g in zip(params, grads) if g is not None}
    return {n: by_id[id(p)] for n, p in model.named_parameters(remove_duplicate=False) if id(p) in by_id}


@IMPORTANCES.register(aliases=("taylor", "Taylor"))
class TaylorImportance(GroupImportance):
    """First-order Taylor: ``|sum(w * dL/dw)|`` of every unit's slices, with gradients summed over
    the calibration batches given to :meth:`prepare` (run in eval mode).

    The state is one summed gradient per parameter (:attr:`state_numel`), whatever the number of
    batches; for a bf16/fp16 model the sums are kept in float32 and the scores computed in float32.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)).to(torch.bfloat16)
        >>> batches = [(torch.randn(2, 4, dtype=torch.bfloat16), torch.randn(2, 1)) for _ in range(3)]
        >>> imp = TaylorImportance()
        >>> imp.prepare(model, batches, loss_fn=lambda out, y: (out.float() - y).pow(2).mean())
        >>> imp.state_numel == sum(p.numel() for p in model.parameters())
        True
    """

    requires_data = True

    def _collect(self, model: nn.Module, data: Any, loss_fn: Any, batch_loss: Any, graph: Any) -> dict[str, Any]:
        return _calibrate(model, data, loss_fn, batch_loss, "TaylorImportance.prepare()")

    @property
    def state_numel(self) -> int:
        """How many accumulated values the criterion holds: one per parameter entry (0 before
        :meth:`prepare`), independent of the number of calibration batches."""
        return sum(g.numel() for g in {id(g): g for g in self._collected.values()}.values())

    def member_scores(self, member: Any, tensor: torch.Tensor) -> torch.Tensor | None:
        path, leaf = _owner(member)
        grad = self._collected.get(f"{path}.{leaf}" if path else leaf)
        if grad is None:
            if not self._collected:
                raise ValueError("TaylorImportance: call prepare(model, data, loss_fn) before scoring.")
            return None  # e.g. a buffer, or a parameter the loss does not reach
        if grad.shape != tensor.shape:
            raise ValueError(
                f"TaylorImportance: gradient of {member.module_name}.{member.param_name} has shape "
                f"{tuple(grad.shape)} but the tensor {tuple(tensor.shape)}; call prepare() again after pruning."
            )
        return _per_index(tensor.detach() * grad, member.dim).abs()


@IMPORTANCES.register(aliases=("fisher", "group_fisher", "GroupFisher"))
class GroupFisherImportance(GroupImportance):
    """Fisher information of a virtual 0/1 mask on each unit (Liu et al., 2021, "Group Fisher Pruning").

    For every calibration sample, ``g = dL/dm`` of a unit's mask is the sum over all layers reading
    the unit of ``input * grad_input`` over that unit's channels; the score is ``sum(g ** 2) / 2``
    accumulated over samples and batches. Needs the graph in :meth:`prepare` (``graph=``).
    """

    requires_data = True

    def _collect(self, model: nn.Module, data: Any, loss_fn: Any, batch_loss: Any, graph: Any) -> dict[str, Any]:
        who = "GroupFisherImportance.prepare()"
        if graph is None:
            raise ValueError(f"{who}: pass graph=DependencyGraph.build(model, example_inputs).")
        sites_by_module: dict[str, list[tuple[str, Any]]] = {}
        sizes: dict[str, int] = {}
        for group in graph.groups():
            try:
                sites = consumer_sites(model, group, who)
            except ValueError:
                continue  # unscorable by this criterion; target pruning leaves such groups alone
            sizes[group.id] = group.size
            for site in sites:
                sites_by_module.setdefault(site.module_name, []).append((group.id, site))
        fisher = {gid: torch.zeros(n) for gid, n in sizes.items()}
        batch_grads: dict[str, torch.Tensor] = {}

        def make_hook(entries: list[tuple[str, Any]]) -> Any:
            def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                x = site_input(args, kwargs, entries[0][1])
                if not x.requires_grad:
                    return

                def on_grad(grad: torch.Tensor) -> None:
                    dim = entries[0][1].input_dim % x.ndim
                    contrib = (x.detach() * grad.detach()).float().movedim(dim, -1)
                    per_channel = contrib.reshape(contrib.shape[0], -1, contrib.shape[-1]).sum(1).cpu()
                    for gid, site in entries:
                        units = torch.stack(
                            [per_channel[:, list(idx)].sum(1) for idx in site.unit_indices], 1
                        )
                        prev = batch_grads.get(gid)
                        batch_grads[gid] = units if prev is None else prev + units

                x.register_hook(on_grad)

            return hook

        def fold() -> None:
            for gid, g in batch_grads.items():
                fisher[gid] += g.pow(2).sum(0) / 2
            batch_grads.clear()

        handles = []
        try:
            for name, entries in sites_by_module.items():
                module = get_submodule(model, name, who)
                handles.append(module.register_forward_pre_hook(make_hook(entries), with_kwargs=True))
            _calibrate(model, data, loss_fn, batch_loss, who, after_backward=fold)
        finally:
            for h in handles:
                h.remove()
        return fisher

    def raw_scores(self, model: nn.Module, group: Any) -> torch.Tensor | None:
        if not self._collected:
            raise ValueError("GroupFisherImportance: call prepare(model, data, loss_fn, graph=graph) first.")
        scores = self._collected.get(group.id)
        if scores is None or scores.numel() != group.size:
            return None
        return scores.clone()


@IMPORTANCES.register(aliases=("random",))
class RandomImportance(GroupImportance):
    """Uniform random scores: the baseline every criterion should beat.

    Args:
        seed: Seed of the scores (``None``: the global torch RNG).
    """

    def __init__(self, seed: int | None = None, normalize: str | None = None) -> None:
        super().__init__("mean", normalize, "all")
        self._gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def raw_scores(self, model: nn.Module, group: Any) -> torch.Tensor:
        return torch.rand(group.size, generator=self._gen)


def build_importance(spec: str | Mapping[str, Any] | GroupImportance) -> GroupImportance:
    """An importance from a registered name/alias (``"l1"``), a config dict or an instance.

    Raises:
        UnknownTypeError: an unknown name (naming the closest ones).
        TypeError: something that is none of those.
    """
    if isinstance(spec, GroupImportance):
        return spec
    if isinstance(spec, str):
        return IMPORTANCES.get(spec)()
    if isinstance(spec, Mapping):
        return IMPORTANCES.build(spec)
    raise TypeError(f"build_importance(): expected a name, a config dict or a GroupImportance, got {spec!r}.")
