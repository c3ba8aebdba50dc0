"""Knowledge distillation: losses, connectors, ConfigurableDistiller, algorithms, Mapping/distill.

Every loss and connector class is also reachable here (``torchpare.distill.KLDivergence``).
"""

from torchpare._lazy import lazy_exports

_TABLE = {
    "ConfigurableDistiller": "distiller",
    "SingleTeacherDistill": "algorithms",
    "SelfDistill": "algorithms",
    "MultiTeacherDistill": "algorithms",
    "OnlineDistill": "algorithms",
    "OFDDistiller": "algorithms",
    "Mapping": "mapping",
    "MappingEntry": "mapping",
    "DistillModel": "mapping",
    "distill": "mapping",
    "conv2d_adapter": "adapters",
    "inverted_conv2d_adapter": "adapters",
    "linear_adapter": "adapters",
    "inverted_linear_adapter": "adapters",
    "match_channels": "adapters",
    "ChannelMatch": "adapters",
    # the module is `recovery`: a submodule named like the function would shadow it once imported
    "recover": "recovery",
    "Recovery": "recovery",
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports(__name__, _TABLE, fallbacks=("losses", "connectors"))
