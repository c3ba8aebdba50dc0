"""The rule interface: how one module type or one torch function moves channel identities.

Dependency analysis runs a real forward pass. Every traced tensor carries an int64 *label tensor* of
the same shape whose entries are element ids of a union-find: two entries with the same component must
be pruned together. A rule reads the labels of its inputs (``ctx.label(t)``), ties them to parameter
slices (``ctx.param(...)`` + ``ctx.union(...)``) and returns labels for its outputs.

Two kinds of rules:

* :class:`ModuleRule` (registered for an ``nn.Module`` subclass): the module is a *leaf* of the trace,
  one node; torch functions called inside it are not recorded. Its :meth:`ModuleRule.propagate`
  declares which parameter slices produce (``role="out"``) and read (``role="in"``) channels; its
  :meth:`ModuleRule.prune` performs the surgery (slice parameters, update ``in_channels`` & co.).
  A rule sees the parameters of the module *and of its descendants* (``"q_proj.weight"``), so an
  attention block can be one leaf owning its projections.
* :class:`FunctionRule` (registered for a torch function, method or operator, e.g. ``torch.cat``,
  ``torch.Tensor.flatten``): only :meth:`FunctionRule.propagate`. Parameters used directly by such
  functions are sliced generically by the surgery.

Unit granularity: elements unioned into one component form one *unit* (a channel, or a whole head when
an attention rule unions all rows of a head). ``ctx.param(..., unit="head")`` names the unit kind.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchpare.prune.rules import ModuleRule, register_rule
    >>> class Scale(nn.Module):  # y = x * w, one weight per channel (last dim)
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.ones(n))
    ...     def forward(self, x):
    ...         return x * self.w
    >>> class ScaleRule(ModuleRule):
    ...     def propagate(self, ctx, call):
    ...         w = ctx.param(call.module_name, "w", dim=0, role="out")
    ...         x = ctx.label(call.args[0])
    ...         ctx.union(x, ctx.along(w, x.shape, dim=-1))
    ...         return x
    >>> _ = register_rule(Scale, ScaleRule(), override=True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchpare._utils import get_submodule

if TYPE_CHECKING:  # the context lives in the graph package; rules only use its methods
    from torchpare.prune.labels import LabelContext

__all__ = ["Call", "ModuleRule", "FunctionRule", "slice_tensor_attr", "func_name", "ROLE_IN", "ROLE_OUT"]

ROLE_OUT = "out"
ROLE_IN = "in"


@dataclass
class Call:
    """One recorded call: a leaf module's forward or a torch function.

    Attributes:
        module_name: dotted name of the leaf module (module rules) or of the innermost module whose
            forward made the function call (function rules; ``""`` = the root). Used in reports.
        module: the leaf module (``None`` for function calls).
        func: the torch function / method / operator (``None`` for module calls).
        args, kwargs: the real arguments.
        output: the real output.
    """

    module_name: str
    module: nn.Module | None
    func: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    output: Any = None

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name`` (how torch functions are called varies)."""
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(name, default)

    @property
    def where(self) -> str:
        """``"aten.cat at layer 'stage1'"``-style location used in reports."""
        what = func_name(self.func) if self.func is not None else type(self.module).__name__
        return f"{what} at layer {self.module_name or '<root>'!r}"


class FunctionRule:
    """Channel behaviour of a torch function. Subclass and implement :meth:`propagate`."""

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        """Return labels for ``call.output``: a label tensor per output tensor (same nesting).

        Args:
            ctx: label context (``label``, ``param``, ``union``, ``block``, ``inexact``...).
            call: the recorded call.

        Returns:
            A tensor of labels, or a tuple/list of them mirroring the output; ``None`` entries
            mean "no channel identity" (treated as neutral).
        """
        raise NotImplementedError


class ModuleRule:
    """Channel behaviour and surgery of one ``nn.Module`` type (the module becomes a trace leaf).

    Subclasses implement :meth:`propagate` and, when attributes depend on sizes, :meth:`update`.
    The default :meth:`prune` slices every ``(param_path, dim)`` it is given and then calls
    :meth:`update`.

    Attributes:
        inherit: if True the rule also applies to subclasses that override ``forward``; by default a
            subclass with its own ``forward`` is traced through instead (its forward may differ).
    """

    inherit: bool = False

    def propagate(self, ctx: LabelContext, call: Call) -> Any:
        """Union input labels with parameter slices and return output labels (see FunctionRule)."""
        raise NotImplementedError

    def prune(self, module: nn.Module, keep: Mapping[tuple[str, int], torch.Tensor]) -> None:
        """Shrink ``module`` in place.

        Args:
            module: the leaf module.
            keep: ``(param_path, dim) -> sorted int64 indices to KEEP``; ``param_path`` is relative to
                ``module`` (``"weight"``, ``"q_proj.weight"``) and names a parameter or buffer.
        """
        for (path, dim), idx in keep.items():
            slice_tensor_attr(module, path, dim, idx)
        self.update(module)

    def update(self, module: nn.Module) -> None:
        """Refresh size attributes (``out_channels``, ``num_heads``...) after slicing. Default: nothing."""


def slice_tensor_attr(module: nn.Module, path: str, dim: int, keep: torch.Tensor) -> None:
    """Replace the parameter or buffer at ``path`` by its ``index_select(dim, keep)``.

    Parameters stay ``nn.Parameter`` with the same ``requires_grad``; buffers stay buffers. Runs under
    ``torch.no_grad()``; the old tensor is released (optimizers holding it must be rebuilt).

    Args:
        module: owner (or an ancestor) of the tensor.
        path: dotted path relative to ``module``.
        dim: dimension to slice.
        keep: int64 indices to keep.

    Raises:
        AttributeError: no parameter or buffer at ``path``.

    Example:
        >>> lin = nn.Linear(4, 3)
        >>> slice_tensor_attr(lin, "weight", 0, torch.tensor([0, 2]))
        >>> tuple(lin.weight.shape), isinstance(lin.weight, nn.Parameter)
        ((2, 4), True)
    """
    owner_path, _, name = path.rpartition(".")
    owner = get_submodule(module, owner_path, who="slice_tensor_attr") if owner_path else module
    if name in owner._parameters and owner._parameters[name] is not None:
        old = owner._parameters[name]
        with torch.no_grad():
            new = _take(old, dim, keep)
        owner._parameters[name] = nn.Parameter(new, requires_grad=old.requires_grad)
    elif name in owner._buffers and owner._buffers[name] is not None:
        old = owner._buffers[name]
        with torch.no_grad():
            owner._buffers[name] = _take(old, dim, keep)
    else:
        raise AttributeError(
            f"slice_tensor_attr(): {type(owner).__name__} at {owner_path or '<module>'!r} has no "
            f"parameter or buffer {name!r}."
        )


def _take(old: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    """A new tensor with ``old``'s entries ``keep`` along ``dim`` (never a view of ``old``).

    One copy, no ``clone()`` after it (the result owns fresh storage already): the peak while a large
    weight is sliced is the old tensor plus the kept part. Along a later dim advanced indexing is used,
    about twice as fast as ``index_select`` there on CPU (bfloat16 and float32).
    """
    keep = keep.to(old.device)
    dim = dim % old.dim()
    if dim == 0:
        return old.index_select(0, keep)
    return old[(slice(None),) * dim + (keep,)].contiguous()


def func_name(func: Any) -> str:
    """Readable name of a torch function for reports (``torch.cat``, ``Tensor.flatten``)."""
    try:
        name = _FUNC_NAMES.get(func)
    except TypeError:  # an unhashable callable: named each time
        return _func_name(func)
    if name is None:
        name = _FUNC_NAMES[func] = _func_name(func)
    return name


# func_name of each function met (``Call.where`` asks for it on most traced calls)
_FUNC_NAMES: dict[Any, str] = {}


def _func_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    name = name.replace("_VariableFunctionsClass.", "").replace("_TensorBase.", "Tensor.")
    name = name.replace("TensorBase.", "Tensor.")
    module = getattr(func, "__module__", None)
    if module and not name.startswith("Tensor.") and module.startswith("torch"):
        module = module.replace("torch._C._nn", "torch.nn.functional").replace(
            "torch._C._VariableFunctions", "torch"
        )
        return f"{module}.{name}"
    return name if name.startswith("Tensor.") else f"torch.{name}"
