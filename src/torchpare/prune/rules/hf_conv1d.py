"""Rule for Hugging Face ``Conv1D`` (GPT-2, GPT, ...): a Linear layer with a *transposed* weight.

``transformers.pytorch_utils.Conv1D(nf, nx)`` stores ``weight`` as ``(nx, nf)`` = ``(in, out)`` and
computes ``x @ weight + bias``, so output channels live on ``weight`` dim 1 (and ``bias`` dim 0) and
input channels on ``weight`` dim 0: the opposite of ``nn.Linear``. Its forward reads ``self.nf`` to
shape the output, so the surgery must refresh ``nf`` and ``nx``.

The class is registered by a class hook the first time a traced model contains it, so importing
torchpare never imports ``transformers``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.registry import MODULE_RULES, register_class_hook, register_rule

__all__ = ["Conv1DRule", "register_conv1d_rule"]

_CONV1D_PATH = ("transformers.pytorch_utils", "Conv1D")


class Conv1DRule(ModuleRule):
    """Channels of an HF ``Conv1D``: outputs on ``weight[:, j]`` and ``bias[j]``, inputs on ``weight[i, :]``.

    The layer acts on the last dim of its input (``x.view(-1, nx) @ weight``), like ``nn.Linear``.
    """

    def propagate(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        x = ctx.label(call.arg(0, "x"))
        w_in = ctx.param(name, "weight", dim=0, role=ROLE_IN)
        ctx.union(w_in, ctx.channels(x, -1, call.where))
        w_out = ctx.param(name, "weight", dim=1, role=ROLE_OUT)
        if getattr(module, "bias", None) is not None:
            ctx.union(ctx.param(name, "bias", dim=0, role=ROLE_OUT), w_out)
        return ctx.along(w_out, call.output.shape, dim=-1)

    def update(self, module: nn.Module) -> None:
        module.nx, module.nf = (int(s) for s in module.weight.shape)


def register_conv1d_rule(model: nn.Module) -> list[type]:
    """Register :class:`Conv1DRule` for transformers' ``Conv1D`` if ``model`` uses it.

    Tracing does this by itself (a class hook); call it to register the rule without tracing.

    Args:
        model: a model.

    Returns:
        ``[Conv1D]`` when newly registered, else ``[]``.

    Example:
        >>> register_conv1d_rule(nn.Linear(2, 2))
        []
    """
    return [cls for cls in {type(m) for m in model.modules()} if _register_class(cls)]


def _register_class(cls: type) -> bool:
    if (cls.__module__, cls.__qualname__) == _CONV1D_PATH and cls not in MODULE_RULES:
        register_rule(cls, Conv1DRule())
        return True
    return False


register_class_hook(_register_class)
