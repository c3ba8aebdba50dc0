"""Subnet pruners over channel spaces: :class:`StructurePruner`, :class:`RatioPruner`,
:class:`RandomPruner`, and :func:`deploy_subnet` (all registered in ``PRUNERS`` where they are classes).
"""

from torchpare.prune.pruners.deploy import deploy_subnet, module_channels
from torchpare.prune.pruners.structure import RandomPruner, RatioPruner, StructurePruner

__all__ = ["StructurePruner", "RatioPruner", "RandomPruner", "deploy_subnet", "module_channels"]
