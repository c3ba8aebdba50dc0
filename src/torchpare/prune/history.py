"""The pruning record: what torchpare did to a model, in stable facts, so it can be replayed.

Every torchpare function that prunes (:func:`torchpare.prune.prune`, :func:`~torchpare.prune.deploy_subnet`,
:func:`~torchpare.prune.prune_by_plan`) goes through :func:`torchpare.prune.surgery.apply_plan` with
``record=True``, which keeps a record on the model (a plain attribute: it survives ``copy.deepcopy``
and stays out of the state dict). :func:`torchpare.prune.save_pruned` writes it as ``pruning.json``.

Record format (``format_version`` 2)::

    {"format_version": 2, "model_class": "ResNet",
     "fingerprint": [[parameter_name, shape], ...],        # the unpruned architecture
     "example_inputs": {"shape": [1, 3, 32, 32], "dtype": "float32"},
     "steps": [{"ignored": [...],
                "plan": {group_id: removed_units},          # informational only (traced ids)
                "slices": [{"module": "layer1.0.conv1", "tensor": "weight", "dim": 0, "size": 64,
                            "kept": [[0, 5], [7, 64]], "via": "rule"}, ...],
                "attributes": [{"module": "ln", "attr": "normalized_shape", "index": -1, "value": 60}]}]}

A step names modules, tensors and the indices kept along a dim (as ``[start, stop)`` runs): facts of
the model, not of the tracer, so a file saved under one ``transformers`` release replays under another
without tracing. ``"via": "rule"`` slices through the module's registered rule (which also updates
``out_channels``, ``num_heads``...), ``"via": "tensor"`` slices a parameter or buffer of ``module`` and
then runs the ``update`` of the rule registered for its class. Version 1 files (plans keyed by traced
group ids) are still read, by re-tracing (see :func:`torchpare.prune.load_pruned`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchpare.prune import prune_by_plan
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> net = prune_by_plan(net, torch.randn(1, 4), {"0": [0, 1, 2]})
    >>> step = pruning_record(net)["steps"][0]
    >>> [(s["module"], s["tensor"], s["dim"], s["kept"]) for s in step["slices"]]
    [('0', 'weight', 0, [[3, 8]]), ('0', 'bias', 0, [[3, 8]]), ('2', 'weight', 1, [[3, 8]])]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "Edits",
    "PruningFileError",
    "pruning_record",
    "begin_record",
    "append_step",
    "step_edits",
    "record_to_json",
    "input_spec",
    "inputs_from_spec",
    "architecture_fingerprint",
]

FORMAT_VERSION = 2
_RECORD_ATTR = "_torchpare_pruning"


class PruningFileError(ValueError):
    """A pruning record or folder is missing, malformed, or was made for another architecture."""


@dataclass
class Edits:
    """One surgery step in stable facts: what :func:`torchpare.prune.surgery.apply_edits` does.

    Attributes:
        leaves: ``{leaf module: {(tensor path relative to it, dim): kept indices}}``, sliced by the
            leaf's registered rule.
        tensors: ``[(module, tensor name, dim, kept indices)]``, sliced plainly; then the ``update``
            of the rule registered for the module's class runs.
        attributes: ``[(module, attribute, index, value)]``: size attributes to set (``index`` into a
            shape-like attribute, ignored for ints).
        sizes: ``{(module, tensor path, dim): size before}`` of every sliced tensor (checked on replay).
    """

    leaves: dict[str, dict[tuple[str, int], list[int]]] = field(default_factory=dict)
    tensors: list[tuple[str, str, int, list[int]]] = field(default_factory=list)
    attributes: list[tuple[str, str, int, int]] = field(default_factory=list)
    sizes: dict[tuple[str, str, int], int] = field(default_factory=dict)


# -- example-input specs ---------------------------------------------------------------------------
def input_spec(example_inputs: Any) -> Any:
    """A JSON-able description (shapes and dtypes) of example inputs: a tensor, tuple/list or dict.

    Raises:
        TypeError: an input that is neither a tensor, a sequence, a mapping nor a JSON scalar.

    Example:
        >>> input_spec({"input_ids": torch.zeros(2, 5, dtype=torch.long)})
        {'dict': {'input_ids': {'shape': [2, 5], 'dtype': 'int64'}}}
    """
    if isinstance(example_inputs, torch.Tensor):
        return {"shape": list(example_inputs.shape), "dtype": str(example_inputs.dtype).replace("torch.", "")}
    if isinstance(example_inputs, Mapping):
        return {"dict": {str(k): input_spec(v) for k, v in example_inputs.items()}}
    if isinstance(example_inputs, (tuple, list)):
        return {"tuple": [input_spec(v) for v in example_inputs]}
    if example_inputs is None or isinstance(example_inputs, (bool, int, float, str)):
        return {"value": example_inputs}
    raise TypeError(
        f"input_spec(): cannot describe an example input of type {type(example_inputs).__name__}; "
        "use tensors, tuples/lists or dicts of tensors."
    )


def inputs_from_spec(spec: Any, device: torch.device | str | None = None) -> Any:
    """Build example inputs matching ``spec``: zeros for integer tensors (valid token ids), ones for
    integer tensors whose key contains ``mask``, seeded normal noise for floating tensors.

    Raises:
        PruningFileError: a malformed spec.

    Example:
        >>> inputs_from_spec({"dict": {"attention_mask": {"shape": [1, 3], "dtype": "int64"}}})
        {'attention_mask': tensor([[1, 1, 1]])}
    """
    gen = torch.Generator().manual_seed(0)

    def build(s: Any, key: str = "") -> Any:
        if not isinstance(s, Mapping):
            raise PruningFileError(f"inputs_from_spec(): malformed input spec {s!r}.")
        if "shape" in s:
            dtype = getattr(torch, str(s["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise PruningFileError(f"inputs_from_spec(): unknown dtype {s['dtype']!r} in {s!r}.")
            shape = [int(d) for d in s["shape"]]
            if dtype.is_floating_point or dtype.is_complex:
                t = torch.randn(shape, generator=gen).to(dtype)
            elif "mask" in key:
                t = torch.ones(shape, dtype=dtype)
            else:
                t = torch.zeros(shape, dtype=dtype)
            return t.to(device) if device is not None else t
        if "dict" in s:
            return {k: build(v, k) for k, v in s["dict"].items()}
        if "tuple" in s:
            return tuple(build(v, key) for v in s["tuple"])
        if "value" in s:
            return s["value"]
        raise PruningFileError(f"inputs_from_spec(): malformed input spec {s!r}.")

    return build(spec)


def architecture_fingerprint(model: nn.Module) -> list[list[Any]]:
    """``[[parameter_name, shape], ...]`` for every parameter (shared ones once), in definition order.

    Example:
        >>> architecture_fingerprint(nn.Linear(3, 2))
        [['weight', [2, 3]], ['bias', [2]]]
    """
    return [[name, list(p.shape)] for name, p in model.named_parameters()]


# -- the record kept on a model --------------------------------------------------------------------
def pruning_record(model: nn.Module) -> dict[str, Any] | None:
    """The pruning history torchpare keeps on ``model`` (``None`` if torchpare never pruned it).

    Example:
        >>> pruning_record(nn.Linear(2, 2)) is None
        True
    """
    return getattr(model, _RECORD_ATTR, None)


def new_record(model: nn.Module, example_inputs_spec: Any) -> dict[str, Any]:
    """An empty pruning record for ``model`` in its current (unpruned) architecture."""
    return {
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__qualname__,
        "fingerprint": architecture_fingerprint(model),
        "example_inputs": example_inputs_spec,
        "steps": [],
    }


def set_record(model: nn.Module, record: dict[str, Any]) -> None:
    """Attach ``record`` to ``model`` (replacing any)."""
    # A plain attribute (not a buffer): it survives deepcopy but stays out of the state dict.
    object.__setattr__(model, _RECORD_ATTR, record)


def begin_record(model: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Create (if absent) the record on an unpruned ``model``; call *before* pruning it."""
    record = pruning_record(model)
    if record is None:
        record = new_record(model, input_spec(example_inputs))
        set_record(model, record)
    return record


def _runs(kept: Sequence[int]) -> list[list[int]]:
    """Sorted indices as ``[start, stop)`` runs: ``[0, 1, 2, 5]`` -> ``[[0, 3], [5, 6]]``."""
    runs: list[list[int]] = []
    for i in kept:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _from_runs(runs: Any, where: str) -> list[int]:
    try:
        out = [i for start, stop in runs for i in range(int(start), int(stop))]
    except (TypeError, ValueError) as exc:
        raise PruningFileError(f"{where}: malformed 'kept' runs {runs!r} ({exc}).") from None
    return out


def _plan_to_json(plan: Mapping[Any, Sequence[int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, indices in plan.items():
        gid = key if isinstance(key, str) else getattr(key, "id", None)
        if not isinstance(gid, str):
            raise TypeError(f"append_step(): plan keys must be group ids or ChannelGroups, got {key!r}.")
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        out[gid] = sorted(int(i) for i in idx)
    return out


def append_step(
    model: nn.Module, plan: Mapping[Any, Sequence[int]], ignored: Sequence[str], edits: Edits
) -> None:
    """Append one applied step to ``model``'s record: its ``edits`` (the stable facts replayed on load)
    and, for reading, the plan (traced group ids) and the ignored modules."""
    record = pruning_record(model)
    if record is None:
        raise PruningFileError("append_step(): call begin_record(model, example_inputs) before pruning.")
    json_plan = {gid: idx for gid, idx in _plan_to_json(plan).items() if idx}
    if not json_plan:
        return
    slices = []
    for leaf, keep in edits.leaves.items():
        for (path, dim), kept in keep.items():
            size = edits.sizes[(leaf, path, dim)]
            slices.append(
                {"module": leaf, "tensor": path, "dim": dim, "size": size, "kept": _runs(kept), "via": "rule"}
            )
    for module, name, dim, kept in edits.tensors:
        size = edits.sizes[(module, name, dim)]
        slices.append(
            {"module": module, "tensor": name, "dim": dim, "size": size, "kept": _runs(kept), "via": "tensor"}
        )
    attributes = [{"module": m, "attr": a, "index": i, "value": v} for m, a, i, v in edits.attributes]
    record["steps"].append(
        {"ignored": sorted(ignored), "plan": json_plan, "slices": slices, "attributes": attributes}
    )


def step_edits(step: Mapping[str, Any], where: str = "load_pruned()") -> Edits:
    """The :class:`Edits` of one recorded step (format 2).

    Raises:
        PruningFileError: a malformed step.
    """
    edits = Edits()
    try:
        for s in step["slices"]:
            module, path, dim, size = str(s["module"]), str(s["tensor"]), int(s["dim"]), int(s["size"])
            kept = _from_runs(s["kept"], where)
            edits.sizes[(module, path, dim)] = size
            if s["via"] == "rule":
                edits.leaves.setdefault(module, {})[(path, dim)] = kept
            elif s["via"] == "tensor":
                edits.tensors.append((module, path, dim, kept))
            else:
                raise PruningFileError(f"{where}: unknown slice kind {s['via']!r} in {s!r}.")
        for a in step["attributes"]:
            edits.attributes.append((str(a["module"]), str(a["attr"]), int(a["index"]), int(a["value"])))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PruningFileError):
            raise
        raise PruningFileError(f"{where}: malformed pruning step ({type(exc).__name__}: {exc}).") from None
    return edits


def record_to_json(record: Mapping[str, Any]) -> str:
    """``record`` as JSON text, one line per slice (compact for big models, still readable).

    Example:
        >>> print(record_to_json({"steps": [{"slices": [{"dim": 0}, {"dim": 1}]}]}))
        {
         "steps": [
          {
           "slices": [
            {"dim": 0},
            {"dim": 1}
           ]
          }
         ]
        }
    """

    def dump(obj: Any, depth: int) -> str:
        pad, inner = " " * depth, " " * (depth + 1)
        if isinstance(obj, Mapping) and obj and depth < 3:
            items = [f"{inner}{json.dumps(str(k))}: {dump(v, depth + 1)}" for k, v in obj.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj) and depth < 4:
            items = [f"{inner}{dump(x, depth + 1)}" for x in obj]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return json.dumps(obj)

    return dump(record, 0)
