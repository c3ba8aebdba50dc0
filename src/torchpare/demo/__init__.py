"""The demos: the digits demo (distillation and pruning end to end) and the MiniLM text demo.

This part stands on top of the engine, the zoo and the reference datasets; nothing in the library
imports it. ``torchpare demo`` (``make demo``) runs :func:`run_demo`; ``torchpare demo --task text``
runs :func:`run_text_demo`.
"""

from torchpare._lazy import lazy_exports

_TABLE = {
    "run_demo": "digits",
    "kd_distiller": "digits",
    "at_kd_distiller": "digits",
    "run_text_demo": "text",
    "stdlib_corpus": "text",
    "PooledEncoder": "text",
    "load_minilm": "text",
    "quiet_hf_progress_bars": "text",
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports(__name__, _TABLE, registers=())
