"""Each global registry imports the package that fills it on first lookup (no manual import needed)."""

import subprocess
import sys

import pytest

CASES = [
    ("RECORDERS", "ModuleOutputs"),
    ("DELIVERIES", "FunctionOutputs"),
    ("LOSSES", "KLDivergence"),
    ("CONNECTORS", "ConvModuleConnector"),
    ("DISTILLERS", "ConfigurableDistiller"),
    ("DISTILLERS", "OFDDistiller"),
    ("ALGORITHMS", "SingleTeacherDistill"),
]


@pytest.mark.parametrize(("registry", "name"), CASES)
def test_registry_finds_type_in_a_fresh_interpreter(registry, name):
    code = f"from torchpare.registry import {registry} as R; print(R.get({name!r}).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
