"""Save, reload and export pruned models.

A pruned model is stored as a folder with two files, each written atomically (temp file + rename):

* ``model.safetensors``: the pruned weights;
* ``pruning.json``: what is needed to rebuild the pruned architecture from an *unpruned* instance of
  the same model: the pruning plans in the order they were applied (group id -> removed unit
  indices), the names of the layers excluded from pruning, the example-input spec used to trace the
  dependency graph (shapes and dtypes) and a fingerprint of the unpruned architecture (parameter
  names and shapes), checked on load so a file made for another model fails with a clear message.

Every torchpare function that prunes (:func:`torchpare.prune.prune`,
:func:`torchpare.prune.deploy_subnet`, :func:`apply_plan`) keeps that record on the model, so
:func:`save_pruned` needs nothing but the model.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from torchpare.prune.graph import DependencyGraph
    >>> from torchpare.prune.io import apply_plan, save_pruned, load_pruned
    >>> def make():
    ...     torch.manual_seed(0)
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(3, 4)
    >>> (hidden,) = DependencyGraph.build(make(), x).groups()
    >>> pruned = apply_plan(make(), x, {hidden.id: [0, 1, 2]})
    >>> folder = tempfile.mkdtemp()
    >>> save_pruned(pruned, folder)
    >>> reloaded = load_pruned(folder, make())
    >>> reloaded[0].out_features, torch.allclose(reloaded(x), pruned(x))
    (5, True)
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare._utils import atomic_save, atomic_write_bytes

__all__ = [
    "save_pruned",
    "load_pruned",
    "export_onnx",
    "apply_plan",
    "pruning_record",
    "input_spec",
    "inputs_from_spec",
    "architecture_fingerprint",
    "PruningFileError",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "pruning.json"
FORMAT_VERSION = 1
_RECORD_ATTR = "_torchpare_pruning"


class PruningFileError(ValueError):
    """A pruning folder is missing, malformed, or was made for another architecture."""


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
    """``[[parameter_name, shape], ...]`` for every parameter (shared ones once), in definition order."""
    return [[name, list(p.shape)] for name, p in model.named_parameters()]


# -- the pruning record kept on a model ------------------------------------------------------------
def pruning_record(model: nn.Module) -> dict[str, Any] | None:
    """The pruning history torchpare keeps on ``model`` (``None`` if torchpare never pruned it)."""
    return getattr(model, _RECORD_ATTR, None)


def _plan_to_json(plan: Mapping[Any, Sequence[int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, indices in plan.items():
        gid = key if isinstance(key, str) else getattr(key, "id", None)
        if not isinstance(gid, str):
            raise TypeError(f"apply_plan(): plan keys must be group ids or ChannelGroups, got {key!r}.")
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        out[gid] = sorted(int(i) for i in idx)
    return out


def _new_record(model: nn.Module, example_inputs_spec: Any) -> dict[str, Any]:
    """An empty pruning record for ``model`` in its current (unpruned) architecture."""
    return {
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__qualname__,
        "fingerprint": architecture_fingerprint(model),
        "example_inputs": example_inputs_spec,
        "steps": [],
    }


def begin_record(model: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Create (if absent) the record on an unpruned ``model``; call *before* pruning it."""
    record = pruning_record(model)
    if record is None:
        record = _new_record(model, input_spec(example_inputs))
        # A plain attribute (not a buffer): it survives deepcopy but stays out of the state dict.
        object.__setattr__(model, _RECORD_ATTR, record)
    return record


def append_step(model: nn.Module, plan: Mapping[Any, Sequence[int]], ignored: Sequence[str]) -> None:
    """Append one applied plan (indices relative to the sizes at that moment) to ``model``'s record."""
    record = pruning_record(model)
    if record is None:
        raise PruningFileError("append_step(): call begin_record(model, example_inputs) before pruning.")
    json_plan = {gid: idx for gid, idx in _plan_to_json(plan).items() if idx}
    if json_plan:
        record["steps"].append({"ignored": sorted(ignored), "plan": json_plan})


def apply_plan(
    model: nn.Module,
    example_inputs: Any,
    plan: Mapping[Any, Sequence[int]],
    ignored: Sequence[str] = (),
) -> nn.Module:
    """Physically prune ``model`` in place with ``plan`` and record it so :func:`save_pruned` works.

    Args:
        model: The model to prune (modified in place and returned).
        example_inputs: Inputs to trace the dependency graph with (tensor, tuple or dict of kwargs).
        plan: ``{group_id: indices of units to remove}`` with ids of ``DependencyGraph.build(model, ...)``.
        ignored: Module names excluded from pruning when building the graph.

    Returns:
        ``model``, pruned.

    Raises:
        KeyError: an unknown group id (raised by the graph, naming close ids).
        ValueError: a plan removing every unit of a group.
    """
    from torchpare.prune.graph import DependencyGraph

    begin_record(model, example_inputs)
    graph = DependencyGraph.build(model, example_inputs, ignored=tuple(ignored))
    graph.prune(dict(plan))
    append_step(model, plan, ignored)
    return model


# -- save / load -----------------------------------------------------------------------------------
def save_pruned(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s weights (safetensors) and its pruning config (JSON) into folder ``path``.

    Both files are written atomically. An unpruned model is accepted too (its plan list is empty).

    Args:
        model: A model pruned by torchpare (its pruning record travels in ``pruning.json``).
        path: Folder to write ``model.safetensors`` and ``pruning.json`` into (created if missing).

    Raises:
        PruningFileError: ``model`` was pruned outside torchpare's recorded functions, so the
            architecture could not be rebuilt on load.
    """
    from safetensors.torch import save_model

    record = pruning_record(model)
    if record is None:
        # Never pruned by torchpare: only valid if it is still unpruned, i.e. the record is trivial.
        record = _new_record(model, None)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PruningFileError(f"save_pruned(): {str(folder)!r} is a file; pass a folder path.")
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses aliased tensors; save_model de-duplicates tied weights (e.g. LM heads).
    atomic_save(folder / WEIGHTS_NAME, lambda tmp: save_model(model, tmp))
    payload = json.dumps(
        {**record, "weights": WEIGHTS_NAME, "pruned_fingerprint": architecture_fingerprint(model)}, indent=1
    ).encode()
    atomic_write_bytes(folder / CONFIG_NAME, payload)


def _check_fingerprint(model: nn.Module, expected: list[list[Any]], where: str) -> None:
    have = {name: shape for name, shape in architecture_fingerprint(model)}
    want = {name: shape for name, shape in expected}
    for name, shape in expected:
        if name not in have:
            raise PruningFileError(
                f"{where}: the file was made for another architecture: it has parameter {name!r} "
                f"{tuple(shape)} that {type(model).__name__} lacks. Pass an unpruned instance of the "
                "model the file was saved from."
            )
        if list(have[name]) != list(shape):
            raise PruningFileError(
                f"{where}: the file was made for another architecture (or the model is already "
                f"pruned): parameter {name!r} has shape {tuple(have[name])} here but {tuple(shape)} "
                "in the file. Pass a fresh, unpruned instance of the same model."
            )
    extra = [n for n in have if n not in want]
    if extra:
        raise PruningFileError(
            f"{where}: the file was made for another architecture: {type(model).__name__} has parameter "
            f"{extra[0]!r} that the file does not know."
        )


def load_pruned(path: str | os.PathLike[str], model: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Rebuild a pruned model from an *unpruned* instance of the same architecture and load its weights.

    Args:
        path: Folder written by :func:`save_pruned`.
        model: A fresh, unpruned instance of the model that was pruned (modified in place).
        example_inputs: Inputs to trace the graph with; default: built from the spec in the file.

    Returns:
        ``model``, pruned exactly as the saved one and holding its weights.

    Raises:
        PruningFileError: missing files, a malformed config, or an architecture that differs from
            the saved one (the message names the first differing parameter).
    """
    from safetensors.torch import load_model

    folder = Path(path)
    cfg_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for f in (cfg_file, weights_file):
        if not f.is_file():
            raise PruningFileError(
                f"load_pruned(): {str(f)!r} not found; pass a folder written by save_pruned()."
            )
    try:
        record = json.loads(cfg_file.read_text())
        steps = record["steps"]
        fingerprint = record["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PruningFileError(
            f"load_pruned(): {str(cfg_file)!r} is not a torchpare pruning config ({exc})."
        ) from None
    if record.get("format_version") != FORMAT_VERSION:
        raise PruningFileError(
            f"load_pruned(): {str(cfg_file)!r} has format_version {record.get('format_version')!r}; "
            f"this torchpare reads version {FORMAT_VERSION}."
        )
    _check_fingerprint(model, fingerprint, f"load_pruned({str(folder)!r})")
    if steps:
        if example_inputs is None:
            if record.get("example_inputs") is None:
                raise PruningFileError(f"load_pruned(): {str(cfg_file)!r} stores no example-input spec.")
            device = next((p.device for p in model.parameters()), None)
            example_inputs = inputs_from_spec(record["example_inputs"], device)
        from torchpare.prune.graph import DependencyGraph

        begin_record(model, example_inputs)
        graph = None
        graph_ignored: list[str] | None = None
        for step in steps:
            if graph is None or step["ignored"] != graph_ignored:
                graph_ignored = list(step["ignored"])
                graph = DependencyGraph.build(model, example_inputs, ignored=tuple(graph_ignored))
            graph.prune({gid: list(idx) for gid, idx in step["plan"].items()})
            append_step(model, step["plan"], graph_ignored)
    expected = record.get("pruned_fingerprint")
    if expected is not None and architecture_fingerprint(model) != expected:
        rebuilt = dict((n, s) for n, s in architecture_fingerprint(model))
        first = next((n for n, s in expected if rebuilt.get(n) != s), "?")
        raise PruningFileError(
            f"load_pruned(): replaying the recorded pruning steps does not give the saved architecture "
            f"(first difference at parameter {first!r}); the saved model was changed after torchpare "
            "pruned it (e.g. DependencyGraph.prune called directly). Prune with torchpare.prune.prune, "
            "deploy_subnet or torchpare.prune.io.apply_plan so every step is recorded."
        )
    missing, unexpected = load_model(model, str(weights_file), strict=False)
    if missing or unexpected:
        raise PruningFileError(
            f"load_pruned(): weights in {str(weights_file)!r} do not fit the rebuilt model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    return model


# -- ONNX ------------------------------------------------------------------------------------------
class _PositionalWrapper(nn.Module):
    """Calls ``model(**dict(zip(names, inputs)))`` and returns its tensor outputs as a flat tuple.

    Exporters pass keyword inputs positionally (BERT's ``forward`` then gets ``use_cache`` twice);
    this wrapper gives the exporter a positional signature, and reduces a Hugging Face ``ModelOutput``
    (or dict / tuple) to its tensors (caches and ``None`` are left out: ``use_cache=False`` is passed
    where the forward accepts it)."""

    def __init__(self, model: nn.Module, names: Sequence[str], keyword: bool, extra: Mapping[str, Any]) -> None:
        super().__init__()
        self.model, self.names, self.keyword, self.extra = model, list(names), keyword, dict(extra)
        self.output_names: list[str] = []

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.keyword:
            out = self.model(**dict(zip(self.names, inputs)), **self.extra)
        else:
            out = self.model(*inputs)
        flat, names = _flatten_outputs(out)
        self.output_names = names
        return tuple(flat)


def _flatten_outputs(out: Any, prefix: str = "") -> tuple[list[torch.Tensor], list[str]]:
    if isinstance(out, torch.Tensor):
        return [out], [prefix or "output"]
    tensors: list[torch.Tensor] = []
    names: list[str] = []
    items = out.items() if isinstance(out, Mapping) else (
        ((f"{prefix}_{i}" if prefix else f"output_{i}"), v) for i, v in enumerate(out)
    ) if isinstance(out, (tuple, list)) else ()
    for key, value in items:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            names.append(str(key))
        elif isinstance(value, (tuple, list, Mapping)) and not isinstance(value, str):
            t, n = _flatten_outputs(value, str(key))
            tensors += t
            names += n
    return tensors, names


def _dynamic_axes(
    names: Sequence[str], tensors: Sequence[Any], out_names: Sequence[str], outputs: Sequence[torch.Tensor]
) -> dict[str, dict[int, str]]:
    """Batch (dim 0) for every input and output; sequence (dim 1) for integer inputs of rank 2 (token
    ids, masks) and for outputs of rank >= 3 whose dim 1 is that length."""
    axes: dict[str, dict[int, str]] = {}
    seq_len = None
    for name, t in zip(names, tensors):
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            axes[name] = {0: "batch"}
            if t.dim() == 2 and not (t.dtype.is_floating_point or t.dtype.is_complex):
                axes[name][1] = "sequence"
                seq_len = t.shape[1]
    for name, t in zip(out_names, outputs):
        if t.dim() >= 1:
            axes[name] = {0: "batch"}
            if seq_len is not None and t.dim() >= 3 and t.shape[1] == seq_len:
                axes[name][1] = "sequence"
    return axes


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    opset_version: int = 17,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamo: bool = False,
    dynamic: bool = True,
) -> Path:
    """Export a (pruned) model to an ONNX file with ``torch.onnx.export``, batch and sequence axes dynamic.

    The TorchScript exporter is the default: it works offline and takes well under a second on the
    zoo models, while the ``torch.export``-based one (``dynamo=True``) takes seconds; its deprecation
    warning is silenced here on purpose. The export runs on a copy in eval mode, so the caller's
    model keeps its mode; the file is written atomically. Keyword inputs (Hugging Face models) are
    passed by name through a small wrapper, so ``BertModel`` and friends export; a ``ModelOutput`` is
    exported as its tensors, named after its fields (``last_hidden_state``, ``logits``, ...), and
    ``use_cache=False`` is passed where the forward accepts it (a cache is not an ONNX output).

    With ``dynamic=True`` (default) dim 0 of every input and output is a named ``batch`` axis, and dim
    1 of integer rank-2 inputs (token ids, masks) and of rank->=3 outputs of that length is a
    ``sequence`` axis, so the file runs at other batch sizes and sequence lengths. Export with inputs
    that exercise every branch the model takes (e.g. a padded row in the attention mask), since the
    tracer records the branches the example takes.

    Args:
        model: The model to export.
        example_inputs: A tensor, a tuple of positional tensors, or a dict of keyword tensors.
        path: Target ``.onnx`` file.
        opset_version: ONNX opset.
        input_names: Graph input names; default: the dict keys, or ``input_0, input_1, ...``.
        output_names: Graph output names; default: the output's field names, ``output`` for one
            tensor, or ``output_0, output_1, ...``.
        dynamo: Use the ``torch.export``-based exporter instead.
        dynamic: Make the batch and sequence axes dynamic (``False``: the example's shapes are fixed).

    Returns:
        The path written.

    Raises:
        ImportError: the ``onnx`` extra is not installed (``pip install 'torchpare[onnx]'``).
        ValueError: ``input_names``/``output_names`` of the wrong length.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
        >>> path = export_onnx(net, torch.randn(2, 4), tempfile.mkdtemp() + "/net.onnx")
        >>> import onnx
        >>> [d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
        ['batch', '']
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail early with the install hint)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("export_onnx() needs onnx: pip install 'torchpare[onnx]'") from exc
    import inspect

    path = Path(path)
    keyword = isinstance(example_inputs, Mapping)
    if keyword:
        keys = list(example_inputs)
        args: tuple[Any, ...] = tuple(example_inputs[k] for k in keys)
    else:
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        keys = [f"input_{i}" for i in range(len(args))]
    names = list(input_names) if input_names is not None else keys
    if len(names) != len(args):
        raise ValueError(f"export_onnx(): {len(names)} input_names for {len(args)} inputs.")
    copied = copy.deepcopy(model).eval()
    extra: dict[str, Any] = {}
    try:
        params = inspect.signature(copied.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = {}
    if keyword and "use_cache" in params and "use_cache" not in example_inputs:
        extra["use_cache"] = False
    exported = _PositionalWrapper(copied, keys, keyword, extra)
    with torch.no_grad():
        outputs, default_out = _flatten_outputs(exported.model(**example_inputs, **extra) if keyword
                                                else exported.model(*args))
    out_names = list(output_names) if output_names is not None else default_out
    if len(out_names) != len(outputs):
        raise ValueError(
            f"export_onnx(): {len(out_names)} output_names for {len(outputs)} tensor outputs ({default_out})."
        )
    axes = _dynamic_axes(names, args, out_names, outputs) if dynamic else None
    shape_kwargs: dict[str, Any] = {"dynamic_axes": axes}
    if dynamo and axes is not None:
        # torch.export sees the wrapper's *inputs as one tuple argument; AUTO lets it keep an axis
        # static where the model needs that, instead of failing.
        auto = torch.export.Dim.AUTO
        per_input = tuple({axis: auto for axis in axes.get(n, {})} or None for n in names)
        shape_kwargs = {"dynamic_shapes": (per_input,)}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(
                exported,
                args,
                tmp,
                input_names=names,
                output_names=out_names,
                opset_version=opset_version,
                dynamo=dynamo,
                **shape_kwargs,
            )

    atomic_save(path, write)
    return path
