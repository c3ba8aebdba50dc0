"""Mixture-of-experts FFNs whose experts each have a width of their own: :class:`SplitExperts`.

transformers 5.x keeps all experts of a layer in two 3-D parameters (``gate_up_proj (E, 2I, H)``,
``down_proj (E, H, I)``): one width ``I`` for every expert. :class:`SplitExperts` holds the same
experts as ``E`` children ``"0" .. "E-1"`` (:class:`ExpertFFN`, ``gate_up_proj (2 I_e, H)`` and
``down_proj (H, I_e)``), so expert ``e`` can keep ``I_e`` hidden units of its own. Its forward has the
fused module's signature ``(hidden_states, top_k_index, top_k_weights)`` and computes what transformers'
eager experts loop computes (the same routing, ``act_fn(gate) * up``, the same weighting and sum).

:class:`SplitExpertsRule` makes each expert's hidden units one group (``"<experts>.<e>"``); the hidden
(residual) width flows through every expert, and the router and the number of experts are untouched.
:mod:`torchpare.prune.moe_experts` converts between the fused and the split layouts.

Example:
    >>> import torch
    >>> experts = SplitExperts(num_experts=2, hidden_dim=4, widths=[3, 1], act_fn=torch.nn.SiLU())
    >>> x, index, weights = torch.randn(5, 4), torch.tensor([[0], [1], [0], [1], [1]]), torch.ones(5, 1)
    >>> experts(x, index, weights).shape, experts.widths
    (torch.Size([5, 4]), [3, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from torchpare.prune.rules.base import ROLE_IN, ROLE_OUT, Call, ModuleRule
from torchpare.prune.rules.registry import register_rule

__all__ = ["ExpertFFN", "SplitExperts", "SplitExpertsRule"]


class ExpertFFN(nn.Module):
    """One expert: ``gate_up_proj`` ``(2 I, H)`` (rows ``[0, I)`` gate, ``[I, 2I)`` up), ``down_proj`` ``(H, I)``.

    Args:
        hidden_dim: ``H``.
        intermediate_dim: ``I``, this expert's hidden units.
        device: of the (uninitialised) weights.
        dtype: of the (uninitialised) weights.

    Example:
        >>> ExpertFFN(4, 3).gate_up_proj.shape
        torch.Size([6, 4])
    """

    def __init__(
        self,
        hidden_dim: int,
        intermediate_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.gate_up_proj = nn.Parameter(torch.empty(2 * intermediate_dim, hidden_dim, device=device, dtype=dtype))
        self.down_proj = nn.Parameter(torch.empty(hidden_dim, intermediate_dim, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, intermediate_dim={self.intermediate_dim}"


class SplitExperts(nn.Module):
    """The experts of one MoE layer as separate :class:`ExpertFFN` children ``"0" .. "E-1"``.

    Args:
        num_experts: ``E`` (kept by pruning; the router's outputs index these experts).
        hidden_dim: ``H``, the width the experts read and write.
        widths: the hidden units of each expert (``E`` ints).
        act_fn: the activation applied to the gate half (the fused module's ``act_fn``).
        device: of the (uninitialised) weights.
        dtype: of the (uninitialised) weights.

    Attributes:
        fused_template: what :func:`torchpare.prune.moe_experts.fuse_experts` rebuilds the fused module
            from (the original module without its two parameters), or ``None``. Not a child module.

    Raises:
        ValueError: ``widths`` does not have ``num_experts`` positive entries.

    Example:
        >>> experts = SplitExperts(2, 4, [2, 2], torch.nn.ReLU())
        >>> sorted(experts.state_dict())
        ['0.down_proj', '0.gate_up_proj', '1.down_proj', '1.gate_up_proj']
    """

    def __init__(
        self,
        num_experts: int,
        hidden_dim: int,
        widths: Sequence[int],
        act_fn: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != num_experts or min(widths, default=1) < 1:
            raise ValueError(
                f"SplitExperts: widths {widths} must hold {num_experts} positive ints (one per expert)."
            )
        self.num_experts = int(num_experts)
        self.hidden_dim = int(hidden_dim)
        self.act_fn = act_fn
        for e, width in enumerate(widths):
            self.add_module(str(e), ExpertFFN(hidden_dim, width, device=device, dtype=dtype))
        object.__setattr__(self, "fused_template", None)

    def expert(self, index: int) -> ExpertFFN:
        """Expert ``index`` (``0 <= index < num_experts``)."""
        return self._modules[str(index)]  # type: ignore[return-value]

    @property
    def widths(self) -> list[int]:
        """Hidden units of each expert, in expert order."""
        return [int(self.expert(e).down_proj.shape[1]) for e in range(self.num_experts)]

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """``(tokens, H)`` states, ``(tokens, k)`` expert ids and routing weights -> ``(tokens, H)``.

        Ids ``>= num_experts`` (expert-parallel sentinels) are skipped, as transformers does. While
        traced or exported (``torch.jit`` / ONNX / ``torch.compile``) every expert runs on every token,
        weighted by its routing weight (zero when not chosen): a graph that does not depend on which
        experts the example inputs happened to hit.
        """
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return self._dense_forward(hidden_states, top_k_index, top_k_weights)
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for row in hit.tolist():
            e = row[0]
            if e >= self.num_experts:
                continue
            expert = self.expert(e)
            top_k_pos, token_idx = torch.where(mask[e])
            gate, up = F.linear(hidden_states[token_idx], expert.gate_up_proj).chunk(2, dim=-1)
            out = F.linear(self.act_fn(gate) * up, expert.down_proj)
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final

    def _dense_forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Every expert on every token, times its routing weight (sentinel ids land in an extra column)."""
        routing = torch.zeros(
            hidden_states.shape[0], self.num_experts + 1, dtype=top_k_weights.dtype, device=top_k_weights.device
        ).scatter_add(1, top_k_index.clamp(max=self.num_experts), top_k_weights)
        final = torch.zeros_like(hidden_states)
        for e in range(self.num_experts):
            expert = self.expert(e)
            gate, up = F.linear(hidden_states, expert.gate_up_proj).chunk(2, dim=-1)
            out = F.linear(self.act_fn(gate) * up, expert.down_proj) * routing[:, e, None]
            final = final + out.to(final.dtype)
        return final

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, hidden_dim={self.hidden_dim}, widths={self.widths}"


def _hidden_input(call: Call) -> torch.Tensor | None:
    x = next((a for a in call.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    return x if x is not None else call.kwargs.get("hidden_states")


class SplitExpertsRule(ModuleRule):
    """Each expert's hidden units are one group; the hidden width ``H`` is tied to the input and output.

    Unit ``i`` of expert ``e``: gate row ``i``, up row ``I_e + i`` and down column ``i`` of expert ``e``.

    Example:
        >>> from torchpare.prune.graph import DependencyGraph
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.experts = SplitExperts(2, 4, [3, 2], nn.SiLU())
        ...         for p in self.experts.parameters():
        ...             nn.init.normal_(p)
        ...     def forward(self, x):
        ...         index = (x[:, :1] > 0).long()
        ...         return self.experts(x, index, torch.ones_like(x[:, :1]))
        >>> net = nn.Sequential(nn.Linear(4, 4), Block(), nn.Linear(4, 2))
        >>> [(g.id, g.size) for g in DependencyGraph.build(net, torch.randn(6, 4)).groups()]  # routing reads x[:, 0]
        [('1.experts.0', 3), ('1.experts.1', 2)]
    """

    def propagate(self, ctx: Any, call: Call) -> Any:
        module, name = call.module, call.module_name
        hidden_in = _hidden_input(call)
        if not isinstance(hidden_in, torch.Tensor):
            raise ValueError(f"SplitExpertsRule: SplitExperts at {name!r} got no hidden_states tensor.")
        x_in = ctx.channels(ctx.label(hidden_in), -1, call.where)
        out = x_in
        for e, width in enumerate(module.widths):
            path = f"{name}.{e}" if name else str(e)
            ctx.union(ctx.param(path, "gate_up_proj", dim=1, role=ROLE_IN), x_in)
            rows = ctx.param(path, "gate_up_proj", dim=0, role=ROLE_OUT)
            ctx.union(rows[:width], rows[width:])
            ctx.union(ctx.param(path, "down_proj", dim=1, role=ROLE_IN), rows[:width])
            out = ctx.param(path, "down_proj", dim=0, role=ROLE_OUT)
            ctx.union(out, x_in)  # the experts' output joins the residual stream
        if isinstance(call.output, torch.Tensor):
            return ctx.along(out, call.output.shape, dim=-1)
        return None

    def update(self, module: nn.Module) -> None:
        module.hidden_dim = int(module.expert(0).down_proj.shape[0])
        for e in range(module.num_experts):
            expert = module.expert(e)
            expert.hidden_dim, expert.intermediate_dim = (int(n) for n in expert.down_proj.shape)


register_rule(SplitExperts, SplitExpertsRule())
