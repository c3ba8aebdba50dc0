"""Parts register themselves: after importing a part, its types build by name (no manual submodule import).

The registry names no part: ``import torchpare.registry`` alone knows no types, and a lazily exported
part (distill, prune) declares its modules when imported, without importing them.
"""

import inspect
import json
import subprocess
import sys

import torchpare.registry

CASES = [
    ("torchpare.record", "RECORDERS", "ModuleOutputs"),
    ("torchpare.deliver", "DELIVERIES", "FunctionOutputs"),
    ("torchpare.distill", "LOSSES", "KLDivergence"),
    ("torchpare.distill", "CONNECTORS", "ConvModuleConnector"),
    ("torchpare.distill", "DISTILLERS", "ConfigurableDistiller"),
    ("torchpare.distill", "DISTILLERS", "OFDDistiller"),
    ("torchpare.distill", "ALGORITHMS", "SingleTeacherDistill"),
    ("torchpare.zoo", "MODELS", "DigitsCNN"),
    ("torchpare.datasets", "DATASETS", "digits"),
    ("torchpare.prune", "IMPORTANCES", "L1Importance"),
    ("torchpare.prune", "PRUNERS", "RatioPruner"),
]


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _lookup_code(imports: list[str], cases: list[tuple[str, str]]) -> str:
    return (
        "import json\n"
        + "".join(f"import {m}\n" for m in imports)
        + "import torchpare.registry as reg\n"
        f"cases = {cases!r}\n"
        "out = {}\n"
        "for r, name in cases:\n"
        "    try:\n"
        "        out[r + ':' + name] = getattr(reg, r).get(name).__name__\n"
        "    except Exception as exc:\n"
        "        out[r + ':' + name] = 'ERROR ' + repr(exc)\n"
        "print(json.dumps(out))\n"
    )


def test_every_registry_finds_its_types_after_importing_the_part_in_a_fresh_interpreter():
    # One fresh interpreter per part would be slow; each lookup below is the first for its registry.
    parts = sorted({part for part, _, _ in CASES})
    found = _run(_lookup_code(parts, [(r, name) for _, r, name in CASES]))
    errors = {k: v for k, v in found.items() if v.startswith("ERROR")}
    assert not errors, errors


def test_engine_resolves_config_types_of_the_parts_below_it():
    cases = [("MODELS", "DigitsMLP"), ("DATASETS", "digits"), ("ALGORITHMS", "SelfDistill"),
             ("LOSSES", "ATLoss"), ("PRUNERS", "StructurePruner"), ("RECORDERS", "ModuleOutputs")]
    found = _run(_lookup_code(["torchpare.engine"], cases))
    assert not {k: v for k, v in found.items() if v.startswith("ERROR")}, found


def test_importing_lazy_parts_imports_no_submodule_until_a_lookup_needs_one():
    code = (
        "import json, sys\n"
        "import torchpare\n"
        "after_root = 'torch' in sys.modules\n"
        "import torchpare.distill, torchpare.prune\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('torchpare.distill.', 'torchpare.prune.')))\n"
        "from torchpare.registry import LOSSES\n"
        "LOSSES.get('KLDivergence')\n"
        "print(json.dumps({'torch_after_root': after_root, 'loaded': loaded,\n"
        "                  'losses_loaded': 'torchpare.distill.losses' in sys.modules}))\n"
    )
    out = _run(code)
    assert out == {"torch_after_root": False, "loaded": [], "losses_loaded": True}


def test_registry_names_no_part_and_knows_nothing_alone():
    source = inspect.getsource(torchpare.registry)
    for part in ("record", "deliver", "distill", "prune", "engine", "zoo", "datasets", "demo", "cli"):
        assert f"torchpare.{part}" not in source
    found = _run(_lookup_code([], [("LOSSES", "KLDivergence")]))
    assert found["LOSSES:KLDivergence"].startswith("ERROR UnknownTypeError")
