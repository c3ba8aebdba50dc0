"""Training engine: loop, checkpoints and exact resume, logging, teacher cache, several processes.

Names resolve lazily from their sub-modules (``torchpare.engine.Trainer`` imports ``trainer`` only).
"""

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
    "run_demo": "demo",
    "run_text_demo": "demo_text",
    "init_distributed": "distributed",
    "load_digits_split": "data",
    "digits_loaders": "data",
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports(__name__, _TABLE)
