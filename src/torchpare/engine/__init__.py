"""Training engine: loop, checkpoints and exact resume, logging, teacher cache, several processes.

Names resolve lazily from their sub-modules (``torchpare.engine.Trainer`` imports ``trainer`` only).
The engine builds configs from the registries of the parts below it, so it imports those parts here:
their entries (models, datasets, algorithms, losses, pruners, ...) resolve by type name. The demos
live in :mod:`torchpare.demo`; ``run_demo``/``run_text_demo`` here are deprecated aliases.
"""

# Parts whose registry entries engine configs name (distill and prune only declare their modules here).
import torchpare.datasets
import torchpare.distill
import torchpare.prune
import torchpare.slim  # registers AutoSlim for configs
import torchpare.zoo  # noqa: F401
from torchpare._lazy import lazy_exports

_TABLE = {
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "evaluate": "trainer",
    "TrainConfig": "schedule",
    "SupervisedObjective": "objective",
    "CheckpointError": "checkpoint",
    "CheckpointMismatchError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "TeacherCache": "cache",
    "CachedObjective": "cache",
    "AugmentedViews": "augment",
    "ConfigError": "config",
    "load_config": "config",
    "apply_overrides": "config",
    "validate_config": "config",
    "run_task": "runner",
    "build_report": "report",
    "run_demo": "demo",  # deprecated: torchpare.demo.run_demo (FutureWarning)
    "run_text_demo": "demo_text",  # deprecated: torchpare.demo.run_text_demo (FutureWarning)
    "init_distributed": "distributed",
    "DataBundle": "data",
    "build_data": "data",
    "load_digits_split": "data",  # deprecated: torchpare.datasets.load_digits_split (FutureWarning)
    "digits_loaders": "data",  # deprecated: torchpare.datasets.digits_loaders (FutureWarning)
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports(__name__, _TABLE, registers=())
