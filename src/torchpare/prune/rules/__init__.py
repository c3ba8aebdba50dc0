"""Channel rules, one file per layer family, and :func:`register_rule` to add your own.

Importing this package registers the built-in rules. The Hugging Face rules (``hf_attention``, ``hf_moe``,
``hf_conv1d``) are imported when their files are present; an error inside them is raised, not hidden.
"""

from __future__ import annotations

import importlib
import importlib.util

from torchpare.prune.rules import conv, embedding, linear, mha, norm, ops, reduce, shape  # noqa: E402, F401, I001
from torchpare.prune.rules.base import Call, FunctionRule, ModuleRule, slice_tensor_attr
from torchpare.prune.rules.registry import (
    CLASS_HOOKS,
    FUNCTION_RULES,
    MODULE_RULES,
    TRACE_HOOKS,
    function_rule_for,
    module_rule_for,
    register_class_hook,
    register_rule,
    register_trace_hook,
)

for _optional in ("hf_conv1d", "hf_attention", "hf_moe", "split_experts"):  # split_experts: MoE per-expert widths
    if importlib.util.find_spec(f"{__name__}.{_optional}") is not None:
        importlib.import_module(f"{__name__}.{_optional}")

__all__ = [
    "Call",
    "FunctionRule",
    "ModuleRule",
    "register_rule",
    "register_trace_hook",
    "register_class_hook",
    "module_rule_for",
    "function_rule_for",
    "slice_tensor_attr",
    "MODULE_RULES",
    "FUNCTION_RULES",
    "TRACE_HOOKS",
    "CLASS_HOOKS",
]
