"""Trace one real forward: torch functions through a ``TorchFunctionMode``, leaf modules through hooks.

Why this mechanism: ``TorchFunctionMode`` is public API that sees every torch function, ``Tensor``
method and operator with its real arguments (Python control flow, kwargs and Hugging Face outputs
included), and nothing here depends on autograd node class names. Modules with a registered
:class:`~torchpare.prune.rules.ModuleRule` are leaves (one node each; calls inside them are not
recorded). Everything else is seen as function calls, each dispatched to its registered
:class:`~torchpare.prune.rules.FunctionRule`; an unregistered function that returns tensors blocks its
inputs. Module calls are seen through the two global module forward hooks of ``torch.nn`` (filtered
to this model and this thread), or through per-module hooks appended after a module's own hooks.
All hooks and the mode are removed in ``finally``, even when the forward raises.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from torchpare.prune.labels import LabelContext, distinct

# Leaf modules, not the package: rules/__init__ imports rule files that import prune.labels.
from torchpare.prune.rules.base import Call, ModuleRule, func_name
from torchpare.prune.rules.registry import (
    TRACE_HOOKS,
    function_rule_for,
    module_rule_for,
    run_class_hooks,
    walk_for_trace_hooks,
)

__all__ = ["trace_labels", "func_name", "tensors_in"]


def tensors_in(obj: Any, depth: int = 0) -> list[torch.Tensor]:
    """Tensors inside nested tuples/lists/dicts/dataclass-like outputs (``ModelOutput`` included)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth > 6 or obj is None or isinstance(obj, (int, float, str)):  # no abc check for the common ones
        return []
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_in(v, depth + 1)]
    if isinstance(obj, (dict, Mapping)):  # dict first: ModelOutput is one, no abc check
        return [t for v in obj.values() for t in tensors_in(v, depth + 1)]
    return []


class _Tracer(TorchFunctionMode):
    def __init__(self, ctx: LabelContext, names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.ctx = ctx
        self.names = names
        self.stack: list[str] = [""]
        self.leaf_depth = 0
        self.busy = False
        self.rules: dict[type, ModuleRule | None] = {}  # module_rule_for walks the MRO: once per type
        self.own_hooks: set[nn.Module] = set()  # modules hooked one by one (see trace_labels)
        self.thread = threading.get_ident()
        self.suspended = False  # popped off the mode stack while a leaf runs (see enter_leaf)

    def rule_of(self, module: nn.Module) -> ModuleRule | None:
        cls = type(module)
        if cls not in self.rules:
            self.rules[cls] = module_rule_for(module)
        return self.rules[cls]

    # Global module hooks (two registrations instead of two per module) see every module call in the
    # process: only this thread's calls of this model's modules are taken.
    def global_pre_hook(self, module: nn.Module, args: tuple) -> None:
        if module in self.names and module not in self.own_hooks and threading.get_ident() == self.thread:
            self.stack.append(self.names[module])
            if self.leaf_depth > 0:
                self.leaf_depth += 1
            elif self.rule_of(module) is not None:
                self.enter_leaf()

    # Calls inside a leaf are never recorded: the mode is taken off the stack while the leaf runs, so
    # they run at plain speed instead of through Python dispatch (other modes and tensor subclasses
    # are untouched). Only when this mode is on top: a mode pushed by the model stays as it is.
    def enter_leaf(self) -> None:
        self.leaf_depth = 1
        n = torch._C._len_torch_function_stack()
        if n and torch._C._get_function_stack_at(n - 1) is self:
            torch._C._pop_torch_function_stack()
            self.suspended = True

    def resume(self) -> None:
        if self.suspended:
            self.suspended = False
            torch._C._push_on_torch_function_stack(self)

    def global_post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if module in self.names and module not in self.own_hooks and threading.get_ident() == self.thread:
            self.post_hook(module, args, kwargs, output)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth == 0 and not self.busy:
            self.busy = True
            try:
                self.on_function(func, args, kwargs, out)
            finally:
                self.busy = False
        return out

    # ------------------------------------------------------------------ functions
    def on_function(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if isinstance(out, _NO_TENSOR):
            return  # .shape, .size(), .dtype, .item(): no tensor, no channels
        ctx = self.ctx
        call = Call(self.stack[-1], None, func, args, kwargs, out)
        rule = function_rule_for(func)
        if rule is None:
            outs = tensors_in(out)
            if not outs:
                return
            inputs = tensors_in(list(args)) + tensors_in(list(kwargs.values()))
            labels = [self.input_label(t, func, call) for t in inputs]
            if all(not ctx.has_label(t) or _neutral(lab) for t, lab in zip(inputs, labels)):
                for o in outs:  # factories and ops on constants carry no channels
                    ctx.set_label(o, ctx.neutral(o.shape))
                return
            reason = f"blocked by {func_name(func)} at layer {call.module_name or '<root>'!r}"
            for lab in labels:
                ctx.block(lab, reason)
            s = ctx.sentinel(reason)
            for o in outs:
                ctx.set_label(o, ctx.constant(s, o.shape))
            return
        self.assign(out, rule.propagate(ctx, call), call)

    def input_label(self, t: torch.Tensor, func: Any, call: Call) -> torch.Tensor:
        """The label of an input of an op without a rule. A large parameter seen for the first time
        gets the op's blocked sentinel as a constant label instead of one element per entry: it is
        blocked whole anyway, and per-entry elements would cost about 30 times its bytes in the
        union-find (and seconds to group). Its channels get no group of their own; every channel
        it is later combined with is blocked by the same reason, as before."""
        ctx = self.ctx
        if t.numel() >= _WHOLE_BLOCK_MIN and not ctx.has_label(t) and id(t) in ctx.param_names:
            reason = f"blocked by {func_name(func)} at layer {call.module_name or '<root>'!r}"
            lab = ctx.constant(ctx.sentinel(reason), t.shape)
            ctx.set_label(t, lab)
            return lab
        return ctx.label(t)

    def assign(self, out: Any, labels: Any, call: Call) -> None:
        if isinstance(out, torch.Tensor):
            if isinstance(labels, (tuple, list)) and len(labels) == 1:
                labels = labels[0]
            if labels is None or isinstance(labels, torch.Tensor):
                self.ctx.set_label(out, labels)
            return
        if isinstance(out, (tuple, list)):
            if not isinstance(labels, (tuple, list)) or len(labels) != len(out):
                labels = [None] * len(out) if labels is None else [labels] * len(out)
            for o, lab in zip(out, labels):
                self.assign(o, lab, call)
        elif out is not None and isinstance(out, Mapping) and isinstance(labels, Mapping):
            for k, v in out.items():
                self.assign(v, labels.get(k), call)

    # ------------------------------------------------------------------ modules
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = self.names.get(module, "?")
        self.stack.append(name)
        if self.leaf_depth > 0:
            self.leaf_depth += 1
        elif self.rule_of(module) is not None:
            self.enter_leaf()

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        name = self.stack.pop()
        if self.leaf_depth > 1:
            self.leaf_depth -= 1
            return
        self.busy = True
        try:
            # Rule code works on label tensors: keep it out of the mode entirely (not just
            # unrecorded), which halves the trace time of small models.
            with torch._C.DisableTorchFunction():
                self.on_module(module, name, args, kwargs, output)
        finally:
            self.busy = False

    def on_module(self, module: nn.Module, name: str, args: tuple, kwargs: dict, output: Any) -> None:
        ctx = self.ctx
        if self.leaf_depth == 1:
            self.leaf_depth = 0
            self.resume()
            rule = self.rule_of(module)
            call = Call(name, module, None, args, kwargs, output)
            ctx.current_leaf = name
            try:
                self.assign(output, rule.propagate(ctx, call), call)
            finally:
                ctx.current_leaf = None
            return
        # Safety net: a module whose outputs no traced op produced computed them out of sight
        # (e.g. a C++ kernel that bypasses torch functions): its inputs must not be pruned.
        missing = [o for o in tensors_in(output) if not ctx.has_label(o)]
        if missing:
            reason = f"blocked by {type(module).__name__} at layer {name or '<root>'!r} (untraceable)"
            for t in tensors_in(list(args)) + tensors_in(list(kwargs.values())):
                ctx.block(ctx.label(t), reason)
            for o in missing:
                ctx.set_label(o, ctx.constant(ctx.sentinel(reason), o.shape))


# Outputs that hold no tensor: nothing to label (None is not one of them: `x[i] = v` returns None and
# its rule unites labels).
_NO_TENSOR = (torch.Size, torch.dtype, torch.device, int, float, bool, str)

# A parameter with at least this many entries, read first by an op without a rule, is blocked whole
# without per-entry union-find elements (see ``_Tracer.input_label``).
_WHOLE_BLOCK_MIN = 1 << 16


def _neutral(lab: torch.Tensor | None) -> bool:
    return lab is None or not distinct(lab)


def trace_labels(model: nn.Module, example_inputs: Any, ctx: LabelContext) -> Any:
    """Run ``model`` once on ``example_inputs`` recording labels into ``ctx``; returns the output.

    The model runs in eval mode under ``torch.no_grad()`` (no running-stat updates); its train/eval
    flags are restored afterwards.

    Args:
        model: the model.
        example_inputs: a tensor, a tuple of positional arguments, or a dict of keyword arguments.
        ctx: the label context to fill.
    """
    with walk_for_trace_hooks(model, ctx.modules.values()):  # the context's walk, not one per hook
        for hook in TRACE_HOOKS:
            hook(model)
    names: dict[nn.Module, str] = {}
    for n, m in ctx.modules.items():
        names.setdefault(m, n)
    run_class_hooks({type(m) for m in names})
    tracer = _Tracer(ctx, names)
    # A module with hooks of its own gets ours appended after them (as before: its pre-hooks run
    # traced, its forward hooks inside the leaf); every other module is seen by two global hooks,
    # much cheaper than registering and removing two hooks per module on every build.
    tracer.own_hooks = {m for m in names if m._forward_pre_hooks or m._forward_hooks}
    handles = []
    training = [m for m in names if m.training]
    args, kwargs = _split_inputs(example_inputs)
    try:
        handles.append(register_module_forward_pre_hook(tracer.global_pre_hook))
        handles.append(register_module_forward_hook(tracer.global_post_hook, with_kwargs=True))
        for m in tracer.own_hooks:
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        for m in training:  # plain flags: train() would recurse once per module
            m.training = False
        for t in tensors_in(list(args)) + tensors_in(list(kwargs.values())):
            ctx.set_label(t, ctx.constant(ctx.sentinel("model input", fixed=True), t.shape))
        with torch.no_grad(), tracer:
            try:
                out = model(*args, **kwargs)
            finally:  # a leaf that raised left the mode suspended: put it back before the exit pops it
                tracer.resume()
        for t in tensors_in(out):
            ctx.keep_whole(ctx.label(t), "model output")
        for check in ctx.deferred:
            check()
        return out
    finally:
        for h in handles:
            h.remove()
        for m in training:
            m.training = True


def _split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (dict, Mapping)):
        return (), dict(example_inputs)
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, list):
        return tuple(example_inputs), {}
    return (example_inputs,), {}
