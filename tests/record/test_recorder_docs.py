"""The code blocks of docs/recorders.md and docs/deliveries.md run as written."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["recorders.md", "deliveries.md"])
def test_documentation_examples_run(name, capsys):
    blocks = _python_blocks(name)
    assert blocks, f"no python block in docs/{name}"
    namespace: dict = {"__name__": f"docs_{name.split('.')[0]}"}
    for block in blocks:
        exec(compile(block, f"docs/{name}", "exec"), namespace)  # trusted repository file
    printed = capsys.readouterr().out
    if name == "recorders.md":
        assert "torch.Size([32, 64, 4, 4])" in printed and "torch.Size([32, 16])" in printed
    else:
        assert printed.strip() == "0"
