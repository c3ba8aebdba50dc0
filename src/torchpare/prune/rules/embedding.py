"""``nn.Embedding`` and ``F.embedding``: the embedding dim (weight columns) is a channel dim."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from torchpare.prune.labels import LabelContext
from torchpare.prune.rules.base import ROLE_OUT, Call, FunctionRule, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = ["EmbeddingRule", "FunctionalEmbeddingRule"]


@register_rule(nn.Embedding)
class EmbeddingRule(ModuleRule):
    """Columns of the table produce the output's last dim; indices carry no channels."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        cols = ctx.param(call.module_name, "weight", 1, ROLE_OUT)
        return ctx.along(cols, call.output.shape, -1)

    def update(self, module: nn.Module) -> None:
        module.num_embeddings, module.embedding_dim = module.weight.shape


class FunctionalEmbeddingRule(FunctionRule):
    """``F.embedding(idx, W)`` with ``W`` a parameter of a module traced through."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        w = call.arg(1, "weight")
        name = ctx.param_names.get(id(w))
        if name is None:
            reason = f"{call.where}: embedding table is not a parameter"
            ctx.block(ctx.label(w), reason)
            return ctx.constant(ctx.sentinel(reason), call.output.shape)
        owner, _, p = name.rpartition(".")
        return ctx.along(ctx.param(owner, p, 1, ROLE_OUT), call.output.shape, -1)


register_rule(F.embedding, FunctionalEmbeddingRule())
