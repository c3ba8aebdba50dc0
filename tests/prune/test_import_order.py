"""Every public entry point of torchpare.prune imports on its own, in a fresh interpreter."""

import subprocess
import sys

import pytest

ENTRY_POINTS = [
    "import torchpare.prune.rules",
    "from torchpare.prune import register_rule",
    "import torchpare.prune.surgery",
    "import torchpare.prune.graph",
    "from torchpare.prune import DependencyGraph",
    "import torchpare.prune.verify",
    "import torchpare.prune.importance",
    "import torchpare.prune.pruners",
    "import torchpare.prune.io",
]


@pytest.mark.parametrize("statement", ENTRY_POINTS)
def test_entry_point_imports_first_in_a_fresh_interpreter(statement):
    code = f"{statement}\nfrom torchpare.prune.rules.registry import MODULE_RULES\nassert len(MODULE_RULES) > 5"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
