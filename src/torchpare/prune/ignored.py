"""The one resolver for ``ignored`` (modules never pruned on their output side) and its error.

``DependencyGraph.build``, :func:`torchpare.prune.prune` and the pruners all accept ``ignored``
(module names or module objects) and, for the last two, ``except_start_keys`` (name prefixes). They
all resolve them here, so the same mistake raises the same error everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from torchpare._utils import did_you_mean

__all__ = ["IgnoredModuleError", "resolve_ignored"]


class IgnoredModuleError(KeyError, ValueError, TypeError):
    """An ``ignored`` entry (or an ``except_start_keys`` prefix) that is no module of the model.

    The message names the entry and the closest module names. It subclasses ``KeyError``,
    ``ValueError`` and ``TypeError`` because the three former copies of the resolver raised those for
    this same mistake: existing ``except`` clauses keep working.
    """

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def resolve_ignored(
    model: nn.Module,
    ignored: Iterable[str | nn.Module] | str | nn.Module | None,
    except_start_keys: Iterable[str] | None = None,
    who: str = "torchpare",
    strict_keys: bool = True,
) -> list[str]:
    """Module names excluded from pruning: ``ignored`` (names or modules) plus every module whose name
    starts with one of ``except_start_keys``; in the order given, each name once.

    Args:
        model: The model whose module names are meant.
        ignored: Module names (from ``model.named_modules()``, ``""`` being the whole model) or module
            objects; a single name or module is accepted too.
        except_start_keys: Name prefixes (MMRazor style); every module starting with one is excluded.
        who: The public function resolving (starts every error message).
        strict_keys: Raise when a prefix matches no module (otherwise skip it silently).

    Returns:
        The module names.

    Raises:
        IgnoredModuleError: a name, module or (with ``strict_keys``) prefix that is no module of
            ``model``; the message names it and the closest names.
        TypeError: an entry that is neither a name nor a module.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> resolve_ignored(net, ["2", net[0]])
        ['2', '0']
        >>> try:
        ...     resolve_ignored(net, ["head.0"], who="prune()")
        ... except ValueError as exc:  # also a KeyError
        ...     print(exc)
        prune(): ignored='head.0' is no module of Sequential; did you mean '0'? Use names from model.named_modules().
    """
    if isinstance(ignored, (str, nn.Module)):
        ignored = [ignored]
    items = list(ignored or ())
    keys = list(except_start_keys or ())
    if not items and not keys:  # the common case: no module walk
        return []
    named = list(model.named_modules())
    names = [n for n, _ in named]
    by_id = {}
    for n, m in named:
        by_id.setdefault(id(m), n)
    out: dict[str, None] = {}
    for item in items:
        if isinstance(item, nn.Module):
            if id(item) not in by_id:
                same_kind = [n for n, m in named if type(m) is type(item)]
                hint = f"; its modules of that class are {same_kind[:5]}" if same_kind else ""
                raise IgnoredModuleError(
                    f"{who}: ignored module {type(item).__name__} is not a submodule of "
                    f"{type(model).__name__}{hint}. Pass modules of the model being pruned, or their names."
                )
            out[by_id[id(item)]] = None
        elif isinstance(item, str):
            if item not in names:
                hint = did_you_mean(item, [n for n in names if n]) or _owner_hint(item, names)
                raise IgnoredModuleError(
                    f"{who}: ignored={item!r} is no module of {type(model).__name__}{hint} "
                    "Use names from model.named_modules()."
                )
            out[item] = None
        else:
            raise TypeError(f"{who}: ignored entries must be module names or modules, got {item!r}.")
    for key in keys:
        hits = [n for n in names if n and (n == key or n.startswith(key))]
        if not hits and strict_keys:
            raise IgnoredModuleError(
                f"{who}: except_start_keys entry {key!r} matches no module of {type(model).__name__}"
                f"{did_you_mean(key, [n for n in names if n]) or '.'}"
            )
        out.update(dict.fromkeys(hits))
    return list(out)


def _owner_hint(item: str, names: list[str]) -> str:
    """``"; did you mean 'head'?"`` for ``"head.weight"`` (a tensor path of a module), else ``"."``."""
    prefix = item
    while "." in prefix:
        prefix = prefix.rpartition(".")[0]
        if prefix in names:
            return f"; did you mean {prefix!r}?"
    return "."
