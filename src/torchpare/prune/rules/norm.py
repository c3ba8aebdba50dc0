"""Normalization layers: BatchNorm/InstanceNorm (per channel, exact), GroupNorm (whole groups, exact),
LayerNorm/RMSNorm (per channel parameters, but statistics over the channels: inexact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune.labels import LabelContext
from torchpare.prune.rules.base import ROLE_OUT, Call, FunctionRule, ModuleRule, slice_tensor_attr
from torchpare.prune.rules.registry import register_rule

__all__ = ["BatchNormRule", "GroupNormRule", "LayerNormRule", "FunctionalNormRule"]

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")  # two parameters, two buffers
_INSTANCE_SPATIAL = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}


def _channel_dim(lab: torch.Tensor, n_spatial: int | None) -> int:
    return 0 if n_spatial is not None and lab.dim() == n_spatial + 1 else 1


@register_rule(
    (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.SyncBatchNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    )
)
class BatchNormRule(ModuleRule):
    """Per-channel affine parameters and running statistics on dim 1 of the input."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m = call.module
        x = ctx.label(call.arg(0, "input"))
        ch = ctx.channels(x, _channel_dim(x, _INSTANCE_SPATIAL.get(type(m))), call.where)
        tables = (m._parameters, m._parameters, m._buffers, m._buffers)
        for name, table in zip(_BN_TENSORS, tables):
            if table.get(name) is not None or (name not in table and getattr(m, name, None) is not None):
                ctx.param(call.module_name, name, 0, ROLE_OUT, tie=ch)
        return x

    def update(self, module: nn.Module) -> None:
        for name in _BN_TENSORS:
            t = getattr(module, name, None)
            if t is not None:
                module.num_features = t.shape[0]
                return


@register_rule(nn.GroupNorm)
class GroupNormRule(ModuleRule):
    """Statistics per group: all channels of a group form one unit; pruning reduces ``num_groups``."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m = call.module
        x = ctx.label(call.arg(0, "input"))
        ch = ctx.channels(x, 1, call.where)
        per = m.num_channels // m.num_groups
        grouped = ch.view(m.num_groups, per)
        ctx.union(grouped, grouped[:, :1].expand(m.num_groups, per))
        if m.affine:
            ctx.param(call.module_name, "weight", 0, ROLE_OUT, tie=ch)
            ctx.param(call.module_name, "bias", 0, ROLE_OUT, tie=ch)
        return x

    def prune(self, module: nn.Module, keep: Mapping[tuple[str, int], torch.Tensor]) -> None:
        per = module.num_channels // module.num_groups
        for (path, dim), idx in keep.items():
            slice_tensor_attr(module, path, dim, idx)
        module.num_channels = module.weight.shape[0]
        module.num_groups = module.num_channels // per

    def update(self, module: nn.Module) -> None:
        if module.affine:
            per = module.num_channels // module.num_groups
            module.num_channels = module.weight.shape[0]
            module.num_groups = module.num_channels // per


def _last_dim_norm(
    ctx: LabelContext,
    call: Call,
    x: torch.Tensor | None,
    owner: str,
    names: tuple[str | None, ...],
    n_norm: int,
) -> torch.Tensor | None:
    if x is None:
        return None
    if n_norm != 1:
        ctx.block(x, f"{call.where}: normalization over several dims")
        return x
    ch = ctx.channels(x, -1, call.where)
    for name in names:
        if name is not None:
            ctx.param(owner, name, 0, ROLE_OUT, tie=ch)
    ctx.mark_inexact(ch, f"{call.where}: normalization statistics read every channel")
    return x


class LayerNormRule(ModuleRule):
    """``nn.LayerNorm`` / ``nn.RMSNorm`` over the last dim (statistics make pruning inexact)."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        m = call.module
        names = tuple(n for n in ("weight", "bias") if getattr(m, n, None) is not None)
        return _last_dim_norm(
            ctx, call, ctx.label(call.arg(0, "input")), call.module_name, names, len(m.normalized_shape)
        )

    def update(self, module: nn.Module) -> None:
        if getattr(module, "weight", None) is not None:
            module.normalized_shape = (module.weight.shape[0],)


register_rule((nn.LayerNorm, nn.RMSNorm), LayerNormRule())


class FunctionalNormRule(FunctionRule):
    """``F.layer_norm`` / ``F.rms_norm`` / ``F.batch_norm`` / ``F.group_norm`` with module parameters."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        func = call.func
        x = ctx.label(call.arg(0, "input"))
        if func in (F.layer_norm, F.rms_norm):
            tensors = [call.arg(2, "weight"), call.arg(3, "bias") if func is F.layer_norm else None]
            n_norm = len(call.arg(1, "normalized_shape"))
        elif func is F.batch_norm:
            tensors = [
                call.arg(1, "running_mean"),
                call.arg(2, "running_var"),
                call.arg(3, "weight"),
                call.arg(4, "bias"),
            ]
            n_norm = 0
        else:  # group_norm
            tensors = [call.arg(2, "weight"), call.arg(3, "bias")]
            n_norm = -1
        names = [ctx.param_names.get(id(t)) if t is not None else None for t in tensors]
        if any(t is not None and n is None for t, n in zip(tensors, names)):
            reason = f"{call.where}: normalization with tensors that are not parameters"
            ctx.block(x, reason)
            return x
        owners = {n.rpartition(".")[0] for n in names if n is not None}
        if len(owners) > 1:
            ctx.block(x, f"{call.where}: normalization parameters from several modules")
            return x
        owner = owners.pop() if owners else ""
        pnames = tuple(n.rpartition(".")[2] if n is not None else None for n in names)
        if n_norm > 0:
            out = _last_dim_norm(ctx, call, x, owner, pnames, n_norm)
            if n_norm == 1 and x is not None:
                _shape_from_attribute(ctx, call, x)
            return out
        ch = ctx.channels(x, 1, call.where)
        if n_norm == -1:
            g = call.arg(1, "num_groups")
            grouped = ch.view(g, -1)
            ctx.union(grouped, grouped[:, :1].expand_as(grouped))
        for p in pnames:
            if p is not None:
                ctx.param(owner, p, 0, ROLE_OUT, tie=ch)
        return x


def _shape_from_attribute(ctx: LabelContext, call: Call, x: torch.Tensor) -> None:
    """A norm whose ``normalized_shape`` is an attribute of the calling module (``self.normalized_shape``
    of a LayerNorm without parameters, as OLMo's): the surgery must shrink it with the channels."""
    module = ctx.modules.get(call.module_name)
    value = call.arg(1, "normalized_shape")
    if module is None or not isinstance(value, (tuple, list)):
        return
    for name in sorted(vars(module), key=lambda n: n != "normalized_shape"):  # the usual name first
        attr = vars(module)[name]
        if isinstance(attr, (tuple, list)) and tuple(attr) == tuple(value):
            ctx.size_attribute(call.module_name, name, ctx.channels(x, -1, call.where))
            return


register_rule((F.layer_norm, F.rms_norm, F.batch_norm, F.group_norm), FunctionalNormRule())
