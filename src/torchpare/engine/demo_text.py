"""Deprecated: the text demo moved to :mod:`torchpare.demo.text` (``torchpare.demo.run_text_demo``).

Importing this module warns (``FutureWarning``) and re-exports the demo's names; it goes in the next
release.
"""

import warnings

from torchpare.demo.text import (
              PooledEncoder,
              load_minilm,
              quiet_hf_progress_bars,
              run_text_demo,
              stdlib_corpus,
)

__all__ = ["run_text_demo", "stdlib_corpus", "PooledEncoder", "load_minilm", "quiet_hf_progress_bars"]

warnings.warn("torchpare.engine.demo_text moved to torchpare.demo.text (run_text_demo: "
              "torchpare.demo.run_text_demo); the old path goes in the next release.", FutureWarning, stacklevel=2)
