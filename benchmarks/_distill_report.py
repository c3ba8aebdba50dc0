"""Write one benchmark's section into a shared markdown file, between markers, keeping the others."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Distillation benchmarks\n\nEach section is written by the script named in it; rerun the command to refresh.\n"


def write_section(path: str | Path, key: str, body: str) -> None:
    """Replace (or append) the block ``<!-- key:start --> ... <!-- key:end -->`` in ``path``."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {key}:start -->\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
