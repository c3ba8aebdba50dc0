"""Run a subnet on sliced weights instead of masks, so a narrow subnet costs what its width costs.

A masked subnet computes at full width (masks zero channels, nothing gets cheaper), so a sandwich
step of four subnets costs four full steps. Slimmable networks instead run each width on the leading
slices of the shared weights. :class:`SlicedForward` does that for any subnet of a pruner: every
tensor its channel groups touch (weights, biases, BatchNorm statistics) is replaced, through
``torch.func.functional_call``, by the rows/columns of the kept units. Leading units (a
``RatioPruner``'s subnets) give views: gradients and BatchNorm statistic updates go straight into the
shared tensors. The output equals the masked (and the deployed) subnet's; :meth:`SlicedForward.check`
verifies it on the example inputs, and models whose layers keep a channel count of their own (grouped
convolutions, reshapes to a fixed width) are refused there, so the caller falls back to masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from torchpare.distill.algorithms.base import logits_of

__all__ = ["SlicedForward"]


def _owner(member: Any) -> tuple[str, str]:
    """``(module path, tensor name)`` of a group member (rules may name a descendant's tensor)."""
    full = f"{member.module_name}.{member.param_name}" if member.module_name else member.param_name
    path, _, leaf = full.rpartition(".")
    return path, leaf


class SlicedForward:
    """Forward passes of ``pruner``'s subnets on sliced tensors of ``model``.

    Args:
        model: The supernet (unmasked while this runs).
        pruner: The pruner whose ``groups`` define the spaces.

    Example:
        >>> from torchpare.prune import RatioPruner
        >>> from torchpare.zoo import DigitsCNN
        >>> net = DigitsCNN(width=4).eval()
        >>> pruner = RatioPruner(net, torch.zeros(1, 1, 8, 8), ratios=(0.5, 1.0))
        >>> sliced = SlicedForward(net, pruner)
        >>> sliced.check(pruner.ratio_subnet(0.5))
        True
    """

    def __init__(self, model: nn.Module, pruner: Any) -> None:
        self.model = model
        self.pruner = pruner
        named = dict(model.named_parameters())
        named.update(dict(model.named_buffers()))
        # (owner module, attribute) per tensor, read at each call: ``.to()`` replaces buffer objects.
        self._owners = {k: (model.get_submodule(k.rpartition(".")[0]), k.rpartition(".")[2]) for k in named}
        # space -> [(tensor key, dim, index map)]
        self._members: dict[str, list[tuple[str, int, tuple[tuple[int, ...], ...]]]] = {}
        for gid, group in pruner.groups.items():
            rows = []
            for m in group.members:
                path, param = _owner(m)
                key = f"{path}.{param}" if path else param
                if key in named:
                    rows.append((key, m.dim, m.index_map))
            self._members[gid] = rows

    def tensors(self, subnet: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: sliced tensor}`` for every tensor a narrowed space touches."""
        out: dict[str, torch.Tensor] = {}
        current = {k: getattr(module, attr) for k, (module, attr) in self._owners.items()}
        for gid, mask in subnet.items():
            if bool(mask.all()):
                continue
            kept = mask.nonzero().flatten().tolist()
            for key, dim, index_map in self._members.get(gid, ()):
                index = [i for u in kept for i in index_map[u]]
                t = out.get(key, current[key])
                if index == list(range(len(index))):
                    t = t.narrow(dim, 0, len(index))  # a view: gradients/statistics reach the full tensor
                else:
                    t = t.index_select(dim, torch.tensor(index, device=t.device))
                out[key] = t
        # Parameters as contiguous copies (differentiable: gradients still reach the shared tensor);
        # conv kernels are much slower on strided weights. Buffers stay views, so BatchNorm statistic
        # updates land in the shared statistics.
        return {k: (t.contiguous() if isinstance(current[k], nn.Parameter) else t) for k, t in out.items()}

    def __call__(self, subnet: Mapping[str, torch.Tensor], inputs: Any) -> Any:
        """``model(inputs)`` as ``subnet``."""
        tensors = self.tensors(subnet)
        if isinstance(inputs, Mapping):
            return functional_call(self.model, tensors, (), dict(inputs))
        args = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        return functional_call(self.model, tensors, args)

    @torch.no_grad()
    def check(self, subnet: Mapping[str, torch.Tensor], atol: float = 1e-4) -> bool:
        """Whether the sliced forward of ``subnet`` equals the masked one on the example inputs (eval)."""
        was = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            x = self.pruner.example_inputs
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(x.shape, generator=gen).to(x)
            try:
                got = logits_of(self(subnet, x))
            except (RuntimeError, ValueError, TypeError, IndexError):
                return False
            self.pruner.set_subnet(subnet)
            try:
                want = logits_of(self.model(**x) if isinstance(x, Mapping) else
                                 self.model(*x) if isinstance(x, tuple | list) else self.model(x))
            finally:
                self.pruner.set_max_channel()
            return isinstance(got, torch.Tensor) and got.shape == want.shape and bool(
                torch.allclose(got, want, atol=atol, rtol=1e-4))
        finally:
            for module, training in was:
                module.training = training
