"""Each global registry imports the package that fills it on first lookup (no manual import needed)."""

import json
import subprocess
import sys

CASES = [
    ("RECORDERS", "ModuleOutputs"),
    ("DELIVERIES", "FunctionOutputs"),
    ("LOSSES", "KLDivergence"),
    ("CONNECTORS", "ConvModuleConnector"),
    ("DISTILLERS", "ConfigurableDistiller"),
    ("DISTILLERS", "OFDDistiller"),
    ("ALGORITHMS", "SingleTeacherDistill"),
    ("MODELS", "DigitsCNN"),
    ("IMPORTANCES", "L1Importance"),
]


def test_every_registry_finds_its_types_in_a_fresh_interpreter():
    # One fresh interpreter per registry lookup would be slow; each lookup below is the first for its registry.
    code = (
        "import json, sys\n"
        "import torchpare.registry as reg\n"
        f"cases = {CASES!r}\n"
        "out = {}\n"
        "for r, name in cases:\n"
        "    try:\n"
        "        out[r + ':' + name] = getattr(reg, r).get(name).__name__\n"
        "    except Exception as exc:\n"
        "        out[r + ':' + name] = 'ERROR ' + repr(exc)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = {k: v for k, v in found.items() if v.startswith("ERROR")}
    assert not errors, errors
