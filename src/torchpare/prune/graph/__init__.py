"""Dependency analysis: trace a model, propagate channel labels, group coupled channels."""

from torchpare.prune.graph.dependency import DependencyGraph, Plan
from torchpare.prune.graph.group import ChannelGroup, GroupMember

__all__ = ["DependencyGraph", "ChannelGroup", "GroupMember", "Plan"]
