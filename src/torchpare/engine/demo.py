"""Deprecated: the digits demo moved to :mod:`torchpare.demo.digits` (``torchpare.demo.run_demo``).

Importing this module warns (``FutureWarning``) and re-exports the demo's names; it goes in the next
release.
"""

import warnings

from torchpare.demo.digits import EPOCHS, at_kd_distiller, kd_distiller, run_demo

__all__ = ["run_demo", "kd_distiller", "at_kd_distiller", "EPOCHS"]

warnings.warn("torchpare.engine.demo moved to torchpare.demo.digits (run_demo: torchpare.demo.run_demo); "
              "the old path goes in the next release.", FutureWarning, stacklevel=2)
