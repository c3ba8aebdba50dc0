"""Head-granular pruning of PyTorch's own attention, ``nn.MultiheadAttention``.

The module is one trace leaf owning its projections. Its units:

* a whole **head**: rows ``h*d : (h+1)*d`` of the query, key and value projections (packed
  ``in_proj_weight`` thirds, or separate ``q/k/v_proj_weight``), their ``in_proj_bias`` entries, the
  ``bias_k``/``bias_v`` entries (``add_bias_kv``) and the ``out_proj`` columns reading the head;
* the **input channels** of query, key and value (projection columns), coupled with whatever produces
  them (packed weights share columns, so query, key and value channels are then one unit);
* the **output channels** (``out_proj`` rows and bias).

``head_dim`` is never cut. Stock ``nn.MultiheadAttention`` requires ``query width == num_heads *
head_dim == out width``; when a plan keeps that true, the module keeps its class (fast path included)
with ``embed_dim``, ``num_heads``, ``kdim``, ``vdim`` refreshed. Otherwise the surgery turns it into
:class:`PrunedMultiheadAttention`, a subclass with the same parameters (same ``state_dict`` keys)
whose forward handles differing widths; it sets ``_qkv_same_embed_dim = False`` so callers with a fused
fast path (``nn.TransformerEncoderLayer``) take their general path.

Blocked (with a reason in ``graph.report()``): a 3-D ``attn_mask`` (one mask per batch x head, which
the surgery cannot slice) blocks the heads; subclasses of ``nn.MultiheadAttention`` keep everything.
Returned attention weights that the model reads afterwards make heads *inexact* (averaged weights mix
all heads; a zeroed head still attends uniformly), and per-head weights read afterwards block them.

``F.multi_head_attention_forward`` called directly takes ``embed_dim`` and ``num_heads`` as arguments
of the caller's code, which no surgery can change: its channels are blocked with that reason.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, FunctionRule, ModuleRule
from torchpare.prune.rules.registry import MODULE_RULES, register_class_hook, register_rule

__all__ = [
    "MultiheadAttentionRule",
    "PrunedMultiheadAttention",
    "FunctionalMHARule",
    "WindowAttentionRule",
    "SwinV2WindowAttentionRule",
]


class _Unsupported(ValueError):
    """A layout this rule does not prune: the module's channels are blocked with this message."""


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` after a pruning that made its widths differ.

    Same parameters and buffers as the original (``in_proj_weight`` or ``q/k/v_proj_weight``,
    ``in_proj_bias``, ``bias_k``/``bias_v``, ``out_proj``), so ``state_dict`` keys are unchanged; the
    forward has the stock signature and semantics (``batch_first``, unbatched inputs, masks,
    ``add_bias_kv``, ``add_zero_attn``, dropout, ``need_weights``, ``average_attn_weights``,
    ``is_causal``) but reads its sizes from the weights: query width ``embed_dim``, key/value widths
    ``kdim``/``vdim``, ``num_heads * head_dim`` inner width, ``out_proj.out_features`` output width.
    Made by the surgery only (``module.__class__`` swap); never constructed directly.

    Example:
        >>> import torch
        >>> from torchpare.prune import DependencyGraph
        >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        >>> g = DependencyGraph.build(mha, (torch.randn(1, 3, 8),) * 3)
        >>> heads = next(x for x in g.groups() if x.unit == "head")
        >>> g.prune({heads.id: [0]})
        >>> type(mha).__name__, mha.num_heads, mha(*(torch.randn(1, 3, 8),) * 3)[0].shape
        ('PrunedMultiheadAttention', 1, torch.Size([1, 3, 8]))
    """

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if batched and self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        L, N = query.shape[0], query.shape[1]
        H, d = self.num_heads, self.head_dim
        if self.in_proj_weight is not None:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq = bk = bv = None
        if self.in_proj_bias is not None:
            bq, bk, bv = self.in_proj_bias.chunk(3)
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        dtype = q.dtype
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(L, key.shape[0], dtype=torch.bool, device=q.device).triu(1)
        attn_mask = _float_mask(attn_mask, dtype)
        key_padding_mask = _float_mask(key_padding_mask, dtype)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, N, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, N, 1)])
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        q = q.reshape(L, N * H, d).transpose(0, 1)
        k = k.reshape(k.shape[0], N * H, d).transpose(0, 1)
        v = v.reshape(v.shape[0], N * H, d).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros((N * H, 1, d), dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        S = k.shape[1]
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(N, 1, 1, S).expand(-1, H, -1, -1).reshape(N * H, 1, S)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q * math.sqrt(1.0 / float(d))
            if attn_mask is not None:
                scores = torch.baddbmm(attn_mask, scores, k.transpose(-2, -1))
            else:
                scores = torch.bmm(scores, k.transpose(-2, -1))
            weights = torch.softmax(scores, dim=-1)
            probs = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
            out = torch.bmm(probs, v)
            weights = weights.view(N, H, L, S)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            if attn_mask is not None:
                attn_mask = attn_mask.view(N, H, -1, S) if attn_mask.shape[0] != 1 else attn_mask.unsqueeze(0)
            out = F.scaled_dot_product_attention(
                q.view(N, H, L, d), k.view(N, H, S, d), v.view(N, H, S, d), attn_mask, dropout_p
            )
            out = out.permute(2, 0, 1, 3)
        out = out.transpose(0, 1) if need_weights else out
        out = F.linear(out.reshape(L * N, H * d), self.out_proj.weight, self.out_proj.bias).view(L, N, -1)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = masked) as an additive float mask, like stock ``_canonical_mask``."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _bind(call: Call) -> dict[str, Any]:
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    args = dict(zip(names, call.args))
    args.update(call.kwargs)
    return args


@register_rule((nn.MultiheadAttention, PrunedMultiheadAttention))
class MultiheadAttentionRule(ModuleRule):
    """Heads, input channels and output channels of ``nn.MultiheadAttention`` (see the module docstring)."""

    def propagate(self, ctx: Any, call: Call) -> Any:
        try:
            return self._propagate(ctx, call)
        except _Unsupported as err:
            reason = str(err)
            for t in [*call.args, *call.kwargs.values()]:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    ctx.block(ctx.label(t), reason)
            return tuple(
                ctx.constant(ctx.sentinel(reason), o.shape) if isinstance(o, torch.Tensor) else None
                for o in call.output
            )

    def _propagate(self, ctx: Any, call: Call) -> Any:
        m, name = call.module, call.module_name
        where = f"{type(m).__name__} at {name or '<root>'!r}"
        if type(m) not in (nn.MultiheadAttention, PrunedMultiheadAttention):
            raise _Unsupported(
                f"{where}: a subclass of nn.MultiheadAttention may compute something else; its heads and "
                f"widths are kept (register a rule for {type(m).__name__} to prune it)."
            )
        H, d = m.num_heads, m.head_dim
        args = _bind(call)
        q_in, k_in, v_in = (
            ctx.channels(ctx.label(args[n]), -1, call.where) for n in ("query", "key", "value")
        )
        if m.in_proj_weight is not None:
            ctx.param(name, "in_proj_weight", 1, ROLE_IN, tie=q_in)
            cols = ctx.param(name, "in_proj_weight", 1, ROLE_IN)
            ctx.union(cols, k_in)
            ctx.union(cols, v_in)
            rows = ctx.param(name, "in_proj_weight", 0, ROLE_OUT, unit="head")
            rq, rk, rv = rows.reshape(3, -1)
        else:
            r = []
            for pname, source in (("q_proj_weight", q_in), ("k_proj_weight", k_in), ("v_proj_weight", v_in)):
                ctx.param(name, pname, 1, ROLE_IN, tie=source)
                r.append(ctx.param(name, pname, 0, ROLE_OUT, unit="head"))
            rq, rk, rv = r
            rows = torch.cat(r)
        if m.in_proj_bias is not None:
            ctx.param(name, "in_proj_bias", 0, ROLE_OUT, unit="head", tie=rows)
        grid = rows.reshape(3, H, d)
        anchor = grid[0, :, :1]
        for t in range(3):
            ctx.union(grid[t], anchor)
        per_head = anchor.reshape(H)
        if m.bias_k is not None:
            ctx.param(name, "bias_k", 2, ROLE_OUT, unit="head", tie=rk)
        if m.bias_v is not None:
            ctx.param(name, "bias_v", 2, ROLE_OUT, unit="head", tie=rv)
        out_name = f"{name}.out_proj".lstrip(".")
        ctx.param(out_name, "weight", 1, ROLE_IN, unit="head", tie=rv)
        hidden = ctx.param(out_name, "weight", 0, ROLE_OUT)
        if m.out_proj.bias is not None:
            ctx.param(out_name, "bias", 0, ROLE_OUT, tie=hidden)
        mask = args.get("attn_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 3 and H > 1:
            ctx.block(
                per_head,
                f"{where} receives a 3-D attn_mask {tuple(mask.shape)} (one per batch x head) "
                f"that head pruning does not slice",
            )
        out, weights = call.output
        labels_out = ctx.along(hidden, out.shape, dim=-1)
        if weights is None:
            return labels_out, None
        # Weights read afterwards change when heads go: mark the heads once the whole forward is known.
        element = int(ctx.fresh(1)[0])
        per_head_weights = weights.dim() == 4 or (weights.dim() == 3 and out.dim() == 2)

        def check() -> None:
            if not (ctx.uf.linked[element] or ctx.is_blocked(element)):
                return
            if per_head_weights:
                ctx.block(per_head, f"{where} returns per-head attention weights that the model reads")
            else:
                ctx.mark_inexact(
                    per_head,
                    f"averaged attention weights of {where} are read by the model "
                    f"(they mix every head; a zeroed head still attends uniformly)",
                )

        ctx.defer(check)
        return labels_out, ctx.constant(element, weights.shape)

    def update(self, module: nn.Module) -> None:
        m = module
        lin = m.out_proj
        lin.out_features, lin.in_features = (int(s) for s in lin.weight.shape)
        inner = lin.in_features
        m.num_heads = inner // m.head_dim
        if m.in_proj_weight is not None:
            e_in = k_in = v_in = int(m.in_proj_weight.shape[1])
        else:
            e_in, k_in, v_in = (
                int(getattr(m, p).shape[1]) for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight")
            )
        m.embed_dim, m.kdim, m.vdim = e_in, k_in, v_in
        stock = e_in == inner == lin.out_features
        if stock and type(m) is nn.MultiheadAttention:
            m._qkv_same_embed_dim = m.in_proj_weight is not None
        else:
            m.__class__ = PrunedMultiheadAttention
            m._qkv_same_embed_dim = False  # fused fast paths (TransformerEncoderLayer) must not run


class FunctionalMHARule(FunctionRule):
    """``F.multi_head_attention_forward`` called directly: sizes come from the caller's arguments, so its
    channels are blocked (use ``nn.MultiheadAttention`` to prune heads)."""

    def propagate(self, ctx: Any, call: Call) -> Any:
        reason = (
            f"{call.where}: F.multi_head_attention_forward takes embed_dim and num_heads as arguments of the "
            f"caller's code that no surgery can update; use nn.MultiheadAttention to prune its heads"
        )
        for t in [*call.args, *call.kwargs.values()]:
            if isinstance(t, torch.Tensor):
                ctx.block(ctx.label(t), reason)
        outputs = call.output if isinstance(call.output, tuple) else (call.output,)
        labels = tuple(
            ctx.constant(ctx.sentinel(reason), o.shape) if isinstance(o, torch.Tensor) else None
            for o in outputs
        )
        return labels if isinstance(call.output, tuple) else labels[0]


register_rule(F.multi_head_attention_forward, FunctionalMHARule())


class WindowAttentionRule(ModuleRule):
    """Heads of windowed attention with a fused ``[q | k | v]`` Linear and a relative position bias table.

    For modules laid out like Swin's window attention: ``qkv`` (``nn.Linear``, rows ``t*H*d + h*d + i``),
    ``proj`` (``nn.Linear`` reading the merged heads), a per-head ``relative_position_bias_table``
    ``(positions, heads)`` indexed by a buffer, and a forward that reshapes with ``self.num_heads`` and
    ``self.head_dim`` (or ``-1``), never with the input width. A head is its q/k/v rows and biases,
    its table column and its ``proj`` columns; the surgery refreshes ``num_heads``. Masks without a
    head dim (shifted windows) are fine. Register it for such a class::

        register_rule(MyWindowAttention, WindowAttentionRule())

    Args:
        qkv, proj, table: attribute names of the fused Linear, the output Linear and the bias table.
        heads_attr, head_dim_attr: attributes holding the head count and the per-head size.

    The zoo's ``torchpare.zoo.swin.WindowAttention`` gets it by a class hook (``prune`` never imports
    the zoo: the class is recognised by its qualified name the first time a traced model contains it).

    Example:
        >>> from torch import nn
        >>> from torchpare.prune.rules import module_rule_for, register_rule
        >>> class MyWindowAttention(nn.Module):
        ...     def forward(self, x):
        ...         return x
        >>> _ = register_rule(MyWindowAttention, WindowAttentionRule())
        >>> type(module_rule_for(MyWindowAttention())).__name__
        'WindowAttentionRule'
    """

    def __init__(
        self,
        qkv: str = "qkv",
        proj: str = "proj",
        table: str = "relative_position_bias_table",
        heads_attr: str = "num_heads",
        head_dim_attr: str = "head_dim",
    ) -> None:
        self.qkv, self.proj, self.table = qkv, proj, table
        self.heads_attr, self.head_dim_attr = heads_attr, head_dim_attr

    def propagate(self, ctx: Any, call: Call) -> Any:
        m, name = call.module, call.module_name
        join = lambda attr: f"{name}.{attr}".lstrip(".")  # noqa: E731
        H, d = getattr(m, self.heads_attr), getattr(m, self.head_dim_attr)
        qkv, proj, table = getattr(m, self.qkv), getattr(m, self.proj), getattr(m, self.table, None)
        where = f"{type(m).__name__} at {name or '<root>'!r}"
        problem = None
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            problem = f"needs nn.Linear {self.qkv!r} and {self.proj!r}"
        elif qkv.out_features != 3 * H * d or proj.in_features != H * d:
            problem = f"{self.qkv} outputs {qkv.out_features}, {self.proj} reads {proj.in_features}, not 3 x / 1 x {H} x {d}"
        elif table is not None and (table.dim() != 2 or table.shape[1] != H):
            problem = f"{self.table} has shape {tuple(table.shape)}, not (positions, {H})"
        else:
            problem = self._extra_problem(m, H)
        x = call.arg(0, "x")
        if problem is not None:
            reason = f"{where}: {problem}; its heads and inputs are kept"
            ctx.block(ctx.label(x), reason)
            if isinstance(qkv, nn.Linear):  # the query rows carry the reason (graph.report() names it)
                ctx.block(ctx.param(join(self.qkv), "weight", 0, ROLE_OUT), reason)
            return ctx.constant(ctx.sentinel(reason), call.output.shape)
        ctx.param(join(self.qkv), "weight", 1, ROLE_IN, tie=ctx.channels(ctx.label(x), -1, call.where))
        rows = ctx.param(join(self.qkv), "weight", 0, ROLE_OUT, unit="head")
        if qkv.bias is not None:
            ctx.param(join(self.qkv), "bias", 0, ROLE_OUT, unit="head", tie=rows)
        grid = rows.reshape(3, H, d)
        anchor = grid[0, :, :1]
        for t in range(3):
            ctx.union(grid[t], anchor)
        per_head = anchor.reshape(H)
        if table is not None:
            ctx.param(name, self.table, 1, ROLE_OUT, unit="head", tie=per_head)
        self._extra_heads(ctx, m, name, per_head)
        ctx.param(join(self.proj), "weight", 1, ROLE_IN, unit="head", tie=grid[2].reshape(-1))
        hidden = ctx.param(join(self.proj), "weight", 0, ROLE_OUT)
        if proj.bias is not None:
            ctx.param(join(self.proj), "bias", 0, ROLE_OUT, tie=hidden)
        for t in [*call.args[1:], *call.kwargs.values()]:  # a mask or bias with a head dim is not sliced
            if isinstance(t, torch.Tensor) and H > 1 and H in t.shape:
                ctx.block(
                    per_head,
                    f"{where} receives an input of shape {tuple(t.shape)} with a head dim "
                    f"that head pruning does not slice",
                )
        return ctx.along(hidden, call.output.shape, dim=-1)

    def _extra_problem(self, module: nn.Module, heads: int) -> str | None:
        """Why per-head tensors other than q/k/v, the table and ``proj`` cannot be sliced (subclasses)."""
        return None

    def _extra_heads(self, ctx: Any, module: nn.Module, name: str, per_head: torch.Tensor) -> None:
        """Tie per-head tensors other than q/k/v, the table and ``proj`` to ``per_head`` (subclasses)."""

    def update(self, module: nn.Module) -> None:
        for attr in (self.qkv, self.proj):
            lin = getattr(module, attr)
            lin.out_features, lin.in_features = (int(s) for s in lin.weight.shape)
        setattr(
            module,
            self.heads_attr,
            getattr(module, self.proj).in_features // getattr(module, self.head_dim_attr),
        )


class SwinV2WindowAttentionRule(WindowAttentionRule):
    """Heads of Swin-V2's scaled cosine window attention (torchvision's ``ShiftedWindowAttentionV2`` layout).

    As :class:`WindowAttentionRule` (fused ``qkv``, ``proj``, forward reshaping with ``self.num_heads`` and
    ``self.head_dim``), with no bias table but two more per-head tensors: the ``logit_scale`` parameter
    ``(heads, 1, 1)`` and the rows of the position bias MLP's last Linear (``cpb_mlp[-1]``, ``heads``
    outputs, read back with ``.view(-1, self.num_heads)``). The forward may clone the ``qkv`` bias and zero
    its k third (``numel() // 3`` stays right after pruning, since q, k and v lose the same rows). The MLP's
    hidden width is left to the graph's other rules only through this module: it is kept. Register it
    for such a class::

        register_rule(MyWindowAttentionV2, SwinV2WindowAttentionRule())

    Args:
        logit_scale, cpb_mlp: attribute names of the per-head scale and the position bias MLP
            (an ``nn.Sequential`` ending in an ``nn.Linear``); other arguments as :class:`WindowAttentionRule`.

    The zoo's ``torchpare.zoo.swinv2.WindowAttentionV2`` gets it by a class hook.

    Example:
        >>> from torch import nn
        >>> from torchpare.prune.rules import module_rule_for, register_rule
        >>> class MyWindowAttentionV2(nn.Module):
        ...     def forward(self, x):
        ...         return x
        >>> _ = register_rule(MyWindowAttentionV2, SwinV2WindowAttentionRule())
        >>> type(module_rule_for(MyWindowAttentionV2())).__name__
        'SwinV2WindowAttentionRule'
    """

    def __init__(self, logit_scale: str = "logit_scale", cpb_mlp: str = "cpb_mlp", **kwargs: str) -> None:
        super().__init__(table="__no_relative_position_bias_table__", **kwargs)
        self.logit_scale, self.cpb_mlp = logit_scale, cpb_mlp

    def _last_linear(self, module: nn.Module) -> tuple[str, nn.Module | None]:
        mlp = getattr(module, self.cpb_mlp, None)
        if isinstance(mlp, nn.Sequential) and len(mlp):
            return f"{self.cpb_mlp}.{len(mlp) - 1}", mlp[-1]
        return self.cpb_mlp, mlp

    def _extra_problem(self, module: nn.Module, heads: int) -> str | None:
        scale = getattr(module, self.logit_scale, None)
        if not isinstance(scale, nn.Parameter) or scale.dim() < 1 or scale.shape[0] != heads:
            shape = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
            return f"{self.logit_scale} is {shape}, not a parameter with {heads} rows (one per head)"
        path, last = self._last_linear(module)
        if not isinstance(last, nn.Linear) or last.out_features != heads:
            return f"{path} is {type(last).__name__}, not an nn.Linear with {heads} outputs (one per head)"
        return None

    def _hidden(self, module: nn.Module) -> nn.Linear | None:
        """The MLP's first Linear when the MLP is ``Linear - ReLU - Linear`` (its hidden width prunes)."""
        mlp = getattr(module, self.cpb_mlp)
        ok = len(mlp) == 3 and isinstance(mlp[0], nn.Linear) and type(mlp[1]) is nn.ReLU
        return mlp[0] if ok else None

    def _extra_heads(self, ctx: Any, module: nn.Module, name: str, per_head: torch.Tensor) -> None:
        join = lambda attr: f"{name}.{attr}".lstrip(".")  # noqa: E731
        ctx.param(name, self.logit_scale, 0, ROLE_OUT, unit="head", tie=per_head)
        path, last = self._last_linear(module)
        ctx.param(join(path), "weight", 0, ROLE_OUT, unit="head", tie=per_head)
        if last.bias is not None:
            ctx.param(join(path), "bias", 0, ROLE_OUT, unit="head", tie=per_head)
        first = self._hidden(module)
        if first is not None:  # hidden units of the position bias MLP: their own exact group
            hidden = ctx.param(join(f"{self.cpb_mlp}.0"), "weight", 0, ROLE_OUT)
            if first.bias is not None:
                ctx.param(join(f"{self.cpb_mlp}.0"), "bias", 0, ROLE_OUT, tie=hidden)
            ctx.param(join(path), "weight", 1, ROLE_IN, tie=hidden)

    def update(self, module: nn.Module) -> None:
        super().update(module)
        first, (_, last) = self._hidden(module), self._last_linear(module)
        for lin in (first, last):
            if lin is not None:
                lin.out_features, lin.in_features = (int(s) for s in lin.weight.shape)


# Classes laid out as WindowAttentionRule expects, recognised by qualified name (never imported here:
# the zoo stands below prune in the layering).
_WINDOW_ATTENTION_CLASSES = {
    "torchpare.zoo.swin.WindowAttention": WindowAttentionRule,
    "torchpare.zoo.swinv2.WindowAttentionV2": SwinV2WindowAttentionRule,
}


def _register_window_attention(cls: type) -> None:
    rule = _WINDOW_ATTENTION_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")
    if rule is not None and cls not in MODULE_RULES:
        register_rule(cls, rule())


register_class_hook(_register_window_attention)
