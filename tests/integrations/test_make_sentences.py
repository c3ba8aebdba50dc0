"""scripts/make_sentences.py writes the same varied sentences file for the same arguments."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_sentences.py"


def _module():
    spec = importlib.util.spec_from_file_location("make_sentences", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sentences_file_is_deterministic_distinct_and_varied(tmp_path):
    make = _module()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    make.main(["--out", str(a), "--n", "300", "--seed", "3"])
    make.main(["--out", str(b), "--n", "300", "--seed", "3"])
    lines = a.read_text(encoding="utf-8").splitlines()
    assert a.read_bytes() == b.read_bytes()
    assert len(lines) == 300 and len(set(lines)) == 300 and all(line.strip() for line in lines)
    words = {w.lower().strip(".,?") for line in lines for w in line.split()}
    assert len(words) > 400  # many topics and docstring vocabulary, not one template
    assert make.make_sentences(300, seed=4) != make.make_sentences(300, seed=3)
