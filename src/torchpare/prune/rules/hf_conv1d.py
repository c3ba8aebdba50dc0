"""Rule for Hugging Face ``Conv1D`` (GPT-2, GPT, ...): a Linear layer with a *transposed* weight.

``transformers.pytorch_utils.Conv1D(nf, nx)`` stores ``weight`` as ``(nx, nf)`` = ``(in, out)`` and
computes ``x @ weight + bias``, so output channels live on ``weight`` dim 1 (and ``bias`` dim 0) and
input channels on ``weight`` dim 0: the opposite of ``nn.Linear``. Its forward reads ``self.nf`` to
shape the output, so the surgery must refresh ``nf`` and ``nx``.

The rule is registered only when ``transformers`` is installed; importing this file does not import
``transformers`` unless it is already loaded or installed (``transformers.pytorch_utils`` is light).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = ["Conv1DRule", "conv1d_class"]


def conv1d_class() -> type[nn.Module] | None:
    """``transformers.pytorch_utils.Conv1D``, or ``None`` when transformers is not installed."""
    if importlib.util.find_spec("transformers") is None:
        return None
    from transformers.pytorch_utils import Conv1D

    return Conv1D


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


_CONV1D = conv1d_class()
if _CONV1D is not None:
    register_rule(_CONV1D, Conv1DRule(), override=True)
