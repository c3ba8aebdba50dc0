"""Structured pruning: dependency analysis, channel groups, physical pruning, pruners, save/load.

Names resolve lazily from their sub-modules, so importing one part does not import all of them.
"""

from torchpare._lazy import lazy_exports

_TABLE = {
    # core: graph/, rules/, surgery, verification, counting
    "DependencyGraph": "graph",
    "ChannelGroup": "graph",
    "GroupMember": "graph",
    "register_rule": "rules",
    "register_trace_hook": "rules",
    "register_class_hook": "rules",
    "prune_group": "surgery",
    "apply_plan": "surgery",  # the one surgery entry point (graph, plan)
    "prune_by_plan": "by_plan",
    "verify_pruning": "verify",
    "mask_like_plan": "verify",
    "PruningMismatchError": "verify",
    "count": "counting",  # not `count.py`: a submodule named like the function would shadow it
    "PlanCost": "plan_cost",  # a plan's params/FLOPs from the graph, no trial copy (prune()'s search)
    "count_by_module": "plan_cost",
    # algorithms: spaces/subnets, importance, budgeted pruning, save/load/export, the pruning record
    "StructurePruner": "pruners",
    "RatioPruner": "pruners",
    "RandomPruner": "pruners",
    "deploy_subnet": "pruners",
    "prune": "budget",
    "recalibrate_bn": "calibrate",
    "PruneSummary": "budget",
    "IgnoredModuleError": "ignored",
    "pruning_record": "history",
    "save_pruned": "io",
    "load_pruned": "io",
    "export_onnx": "io",
    "save_pretrained": "hf_pretrained",
    "from_pretrained": "hf_pretrained",
    "plain_format_problems": "hf_pretrained",
    "split_experts": "moe_experts",  # MoE: one group per expert (SplitExperts), and back
    "fuse_experts": "moe_experts",
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports(__name__, _TABLE, fallbacks=("importance",))
