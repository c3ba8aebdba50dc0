"""Griffe extension for the documentation site (mkdocs.yml loads it; not part of the package).

The docstrings are Google style with two reST habits that Markdown does not know:

* an ``Example:`` section holding doctests: Google style reads ``Examples:`` (plural) as the doctest
  section and ``Example:`` as a plain admonition, whose ``>>>`` lines Markdown would render as text
  (and read ``x[0][1]`` in them as a link). Both spellings become the doctest section here.
* Sphinx roles (``:class:`~torchpare.prune.StructurePruner```): rendered as inline code of the name
  (the last dotted part when the target starts with ``~``), as Sphinx shows them.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class RestToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)
