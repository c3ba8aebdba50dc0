"""Griffe extension for the documentation site (mkdocs.yml loads it; not part of the package).

The docstrings are Google style with two reST habits that Markdown does not know:

* an ``Example:`` section holding doctests: Google style reads ``Examples:`` (plural) as the doctest
  section and ``Example:`` as a plain admonition, whose ``>>>`` lines Markdown would render as text
  (and read ``x[0][1]`` in them as a link). Both spellings become the doctest section here.
* Sphinx roles (``:class:`~torchpare.prune.StructurePruner```): rendered as inline code of the name
  (the last dotted part when the target starts with ``~``), as Sphinx shows them, and linked to the
  object's API entry when the name resolves from where the docstring stands and that object is on an
  API page. The link is optional (mkdocs-autorefs' ``optional``): a name that is not documented on the
  site (a private helper, a torch object) stays plain code instead of failing the strict build.
  A lazily exported name (``torchpare.prune.prune``, from a package's ``_TABLE``) links to the module
  that defines it, where its API page documents it.
"""

from __future__ import annotations

import ast
import html
import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class RestToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        self.lazy: dict[str, str] = {}  # "torchpare.prune.prune" -> "torchpare.prune.budget.prune"
        for sub in _objects(pkg):
            if not sub.is_module:
                continue
            table = sub.members.get("_TABLE")
            if table is not None and not table.is_alias and getattr(table, "value", None) is not None:
                try:
                    entries = ast.literal_eval(str(table.value))
                except (ValueError, SyntaxError):
                    continue
                for name, module in entries.items():
                    self.lazy[f"{sub.path}.{name}"] = f"{sub.path}.{module}.{name}"
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _ROLE.sub(lambda m, o=obj: self._role(o, m), obj.docstring.value)

    def _role(self, obj: griffe.Object, match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        title = target.rsplit(".", 1)[-1] if short else target
        scope = obj if obj.is_module or obj.is_class else obj.parent
        try:
            identifier = scope.resolve(target) if scope is not None else target
        except Exception:  # noqa: BLE001 - any name griffe cannot resolve stays a plain name
            identifier = target if "." in target else ""
        if not identifier:
            return f"`{title}`"
        while identifier in self.lazy:  # torchpare.prune.DependencyGraph -> prune.graph.X -> graph.dependency.X
            identifier = self.lazy[identifier]
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'
