"""Dependency analysis: trace a model, propagate channel labels, group coupled channels.

Names resolve lazily, so importing a leaf module (``prune.labels``, used by every rule file) does not
import the tracer and the rules back.
"""

from torchpare._lazy import lazy_exports

_TABLE = {
    "DependencyGraph": "dependency",
    "Plan": "dependency",
    "ChannelGroup": "group",
    "GroupMember": "group",
    "ModelPlacementError": "placement",
    "check_placement": "placement",
}
__all__ = ["DependencyGraph", "ChannelGroup", "GroupMember", "Plan", "ModelPlacementError", "check_placement"]
__getattr__, __dir__ = lazy_exports(__name__, _TABLE)
