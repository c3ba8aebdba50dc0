"""``torchpare.prune`` has no import cycles: every module can be imported first, in any order.

The imports are read with ``ast`` (no import runs), type-only imports under ``if TYPE_CHECKING:``
excepted. An import of ``a.b.c`` also runs the ``__init__`` of ``a.b``, and ``from pkg import name``
with ``name`` in the package's lazy ``_TABLE`` imports the submodule that table names: both count.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import torchpare.prune

ROOT = Path(torchpare.prune.__file__).parent
PACKAGE = "torchpare.prune"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement (module level or inside functions) outside ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _lazy_table(tree: ast.AST) -> dict[str, str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_TABLE" for t in node.targets):
            return {k: v for k, v in ast.literal_eval(node.value).items()}
    return {}


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of torchpare.prune it imports at run time}``."""
    trees = {_module_name(p): ast.parse(p.read_text(), str(p)) for p in ROOT.rglob("*.py")}
    packages = {_module_name(p) for p in ROOT.rglob("__init__.py")}
    tables = {name: _lazy_table(trees[name]) for name in packages}
    graph: dict[str, set[str]] = {name: set() for name in trees}

    def with_parents(target: str, importer: str) -> set[str]:
        out, parts = set(), target.split(".")
        for i in range(len(PACKAGE.split(".")), len(parts) + 1):
            name = ".".join(parts[:i])
            # a module's own parent packages are already being imported when it runs
            if name in trees and not (importer == name or importer.startswith(name + ".")):
                out.add(name)
        return out

    for name, tree in trees.items():
        base = name if name in packages else name.rpartition(".")[0]
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    module = f"{anchor}.{node.module}" if node.module else anchor
                else:
                    module = node.module or ""
                targets = [module]
                for alias in node.names:
                    if f"{module}.{alias.name}" in trees:
                        targets.append(f"{module}.{alias.name}")
                    elif alias.name in tables.get(module, {}):
                        targets.append(f"{module}.{tables[module][alias.name]}")
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    graph[name] |= with_parents(target, name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_prune_has_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles inside torchpare.prune:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_parent_packages_and_lazy_tables():
    graph = import_graph()
    assert "torchpare.prune.labels" in graph["torchpare.prune.rules.conv"]
    assert "torchpare.prune.graph" in graph["torchpare.prune.verify"]  # graph.trace runs graph/__init__
    # `from torchpare.prune.graph import DependencyGraph` resolves the lazy name to its module
    assert "torchpare.prune.graph.dependency" in graph["torchpare.prune.budget"]
    # type-only imports are not edges
    assert "torchpare.prune.graph.dependency" not in graph["torchpare.prune.graph.report"]


@pytest.mark.parametrize("module", ["torchpare.prune.rules", "torchpare.prune.labels", "torchpare.prune.io"])
def test_a_leaf_of_the_package_imports_first_in_a_fresh_interpreter(module):
    code = f"import {module}\nfrom torchpare.prune.rules.registry import MODULE_RULES\nassert len(MODULE_RULES) > 5"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
