"""The rule tables: ``nn.Module`` type -> :class:`ModuleRule`, torch function -> :class:`FunctionRule`.

Rules are keyed by the class or function *object* (never by a name string), so a torch upgrade that
renames an internal class cannot silently change what a rule matches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from torchpare.prune.rules.base import FunctionRule, ModuleRule

__all__ = [
    "register_rule",
    "register_trace_hook",
    "register_class_hook",
    "run_class_hooks",
    "module_rule_for",
    "function_rule_for",
    "MODULE_RULES",
    "FUNCTION_RULES",
    "TRACE_HOOKS",
    "CLASS_HOOKS",
]

MODULE_RULES: dict[type, ModuleRule] = {}
FUNCTION_RULES: dict[Any, FunctionRule] = {}
TRACE_HOOKS: list[Callable[[nn.Module], None]] = []
CLASS_HOOKS: list[Callable[[type], Any]] = []
_OFFERED: set[type] = set()  # classes every class hook has already seen


def register_trace_hook(hook: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    """Call ``hook(model)`` before every trace (e.g. to register rules for classes found in ``model``).

    Registering the same function twice has no effect. Returns ``hook`` (usable as a decorator).
    """
    if hook not in TRACE_HOOKS:
        TRACE_HOOKS.append(hook)
    return hook


def register_class_hook(hook: Callable[[type], Any]) -> Callable[[type], Any]:
    """Call ``hook(cls)`` once for each ``nn.Module`` class, the first time a traced model contains it.

    The cheap way to register rules lazily for classes of a library that torchpare does not import
    (the transformers rules work this way): unlike a trace hook, it costs no walk of the model on
    later builds. Registering a hook offers it every class again, so hooks must be idempotent.
    Registering the same function twice has no effect. Returns ``hook`` (usable as a decorator).

    Example:
        >>> from torch import nn
        >>> seen = []
        >>> hook = register_class_hook(seen.append)
        >>> run_class_hooks({nn.Linear, nn.ReLU}); run_class_hooks({nn.Linear})
        >>> sorted(c.__name__ for c in seen)
        ['Linear', 'ReLU']
        >>> CLASS_HOOKS.remove(hook)
    """
    if hook not in CLASS_HOOKS:
        CLASS_HOOKS.append(hook)
        _OFFERED.clear()
    return hook


def run_class_hooks(classes: set[type]) -> None:
    """Offer each class of ``classes`` not offered before to every class hook (called by the tracer)."""
    new = classes - _OFFERED
    if not new:
        return
    for cls in sorted(new, key=lambda c: (c.__module__, c.__qualname__)):  # a stable order
        for hook in list(CLASS_HOOKS):
            hook(cls)
    _OFFERED.update(new)


# The module walk of the trace running in this thread, ``(model, modules in pre-order)``: trace hooks
# that look for classes read it instead of walking the model again (see ``walk_for_trace_hooks``).
_TRACING = threading.local()


@contextmanager
def walk_for_trace_hooks(model: nn.Module, modules: Iterable[nn.Module]) -> Iterator[None]:
    """While the trace hooks run, :func:`unruled_transformers_classes` reads ``modules`` (``model``'s
    modules in ``model.modules()`` order, repeats allowed) instead of walking ``model`` again."""
    previous = getattr(_TRACING, "walk", None)
    _TRACING.walk = (model, modules)
    try:
        yield
    finally:
        _TRACING.walk = previous


def unruled_transformers_classes(model: nn.Module, examined: set[type]) -> Iterator[tuple[type, nn.Module]]:
    """``(class, first instance)`` for each transformers class in ``model`` not in ``examined`` and
    without a rule; every class met is added to ``examined`` (so a trace hook looks at each once).

    Example:
        >>> from torch import nn
        >>> list(unruled_transformers_classes(nn.Sequential(nn.Linear(2, 2)), set()))
        []
    """
    walk = getattr(_TRACING, "walk", None)
    modules = walk[1] if walk is not None and walk[0] is model else model.modules()
    for module in modules:
        cls = type(module)
        if cls in examined:
            continue
        examined.add(cls)
        if cls in MODULE_RULES or not cls.__module__.startswith("transformers."):
            continue
        yield cls, module


def register_rule(
    target: type[nn.Module] | Callable[..., Any] | tuple[Any, ...],
    rule: ModuleRule | FunctionRule | type | None = None,
    *,
    override: bool = False,
) -> Any:
    """Register ``rule`` for a module type or a torch function (or several); usable as a decorator.

    Args:
        target: an ``nn.Module`` subclass (its instances become trace leaves), a torch function,
            method or operator (``torch.cat``, ``torch.Tensor.flatten``), or a tuple of those.
        rule: a rule instance, or a rule class (instantiated without arguments). Omit it to use
            ``register_rule(target)`` as a class decorator.
        override: replace an existing rule instead of raising.

    Returns:
        The rule (or, as a decorator, the decorated class unchanged).

    Raises:
        TypeError: ``rule`` kind does not fit ``target`` (a ModuleRule for a function or vice versa).
        ValueError: ``target`` already has a rule and ``override`` is False.

    Example:
        >>> import torch
        >>> from torchpare.prune.rules import FunctionRule, register_rule
        >>> class Identity(FunctionRule):
        ...     def propagate(self, ctx, call):
        ...         return ctx.label(call.args[0])
        >>> _ = register_rule(torch.Tensor.detach, Identity, override=True)
    """
    if rule is None:

        def decorator(cls: type) -> type:
            register_rule(target, cls, override=override)
            return cls

        return decorator
    instance = rule() if isinstance(rule, type) else rule
    targets = target if isinstance(target, tuple) else (target,)
    for t in targets:
        is_module = isinstance(t, type) and issubclass(t, nn.Module)
        table: dict[Any, Any] = MODULE_RULES if is_module else FUNCTION_RULES
        wanted = ModuleRule if is_module else FunctionRule
        if not isinstance(instance, wanted):
            raise TypeError(
                f"register_rule({_name(t)}): expected a {wanted.__name__} for a "
                f"{'module type' if is_module else 'function'}, got {type(instance).__name__}."
            )
        if t in table and table[t] is not instance and not override:
            raise ValueError(
                f"register_rule({_name(t)}): a rule ({type(table[t]).__name__}) is already registered; "
                f"pass override=True to replace it."
            )
        table[t] = instance
    return rule if isinstance(rule, type) else instance


def module_rule_for(module: nn.Module) -> ModuleRule | None:
    """The rule for ``module``'s type, walking its MRO.

    A rule registered for a base class applies to a subclass only when the subclass keeps the base's
    ``forward`` (or the rule sets ``inherit = True``): a subclass with its own forward may compute
    something else, so it is traced through instead.
    """
    cls = type(module)
    for base in cls.__mro__:
        rule = MODULE_RULES.get(base)
        if rule is None:
            continue
        if base is cls or rule.inherit or getattr(cls, "forward", None) is getattr(base, "forward", None):
            return rule
        return None
    return None


def function_rule_for(func: Any) -> FunctionRule | None:
    """The rule registered for the torch function object ``func`` (or ``None``)."""
    try:
        return FUNCTION_RULES.get(func)
    except TypeError:  # unhashable callables cannot have rules
        return None


def _name(t: Any) -> str:
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
