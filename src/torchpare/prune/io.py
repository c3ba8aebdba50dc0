"""Save, reload and export pruned models.

A pruned model is stored as a folder with two files, each written atomically (temp file + rename):

* ``model.safetensors``: the pruned weights;
* ``pruning.json``: the model's pruning record (:mod:`torchpare.prune.history`): what is needed to
  rebuild the pruned architecture from an *unpruned* instance of the same model, in stable facts
  (module and tensor names, indices kept along a dim, size attributes set), plus a fingerprint of the
  unpruned architecture (parameter names and shapes), checked on load so a file made for another
  model fails with a clear message.

Every torchpare function that prunes (:func:`torchpare.prune.prune`,
:func:`torchpare.prune.deploy_subnet`, :func:`torchpare.prune.prune_by_plan`) keeps that record on
the model, so :func:`save_pruned` needs nothing but the model.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from torchpare.prune import prune_by_plan, save_pruned, load_pruned
    >>> def make():
    ...     torch.manual_seed(0)
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(3, 4)
    >>> pruned = prune_by_plan(make(), x, {"0": [0, 1, 2]})
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
from safetensors.torch import load_model, save_model
from torch import nn

from torchpare._utils import atomic_save, atomic_write_bytes
from torchpare.prune.by_plan import prune_by_plan
from torchpare.prune.graph import DependencyGraph
from torchpare.prune.history import (
    FORMAT_VERSION,
    PruningFileError,
    architecture_fingerprint,
    begin_record,
    input_spec,
    inputs_from_spec,
    new_record,
    pruning_record,
    record_to_json,
    set_record,
    step_edits,
)
from torchpare.prune.moe_experts import replay_restructure
from torchpare.prune.rules.hf_heads import note_stage
from torchpare.prune.surgery import apply_edits
from torchpare.prune.surgery import apply_plan as _apply_plan

__all__ = [
    "save_pruned",
    "load_pruned",
    "export_onnx",
    # re-exported from torchpare.prune.history, where the record lives:
    "pruning_record",
    "input_spec",
    "inputs_from_spec",
    "architecture_fingerprint",
    "PruningFileError",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "pruning.json"
_READABLE_VERSIONS = (1, FORMAT_VERSION)


def apply_plan(
    model: nn.Module,
    example_inputs: Any,
    plan: Mapping[Any, Sequence[int]],
    ignored: Sequence[str] = (),
) -> nn.Module:
    """Deprecated alias of :func:`torchpare.prune.prune_by_plan` (same arguments); emits ``FutureWarning``.

    Renamed because :func:`torchpare.prune.surgery.apply_plan` (graph, plan) is the surgery itself.
    """
    warnings.warn(
        "torchpare.prune.io.apply_plan(model, example_inputs, plan) is renamed "
        "torchpare.prune.prune_by_plan(model, example_inputs, plan); the old name will be removed.",
        FutureWarning,
        stacklevel=2,
    )
    return prune_by_plan(model, example_inputs, plan, ignored)


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
    record = pruning_record(model)
    if record is None:
        # Never pruned by torchpare: only valid if it is still unpruned, i.e. the record is trivial.
        record = new_record(model, None)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PruningFileError(f"save_pruned(): {str(folder)!r} is a file; pass a folder path.")
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses aliased tensors; save_model de-duplicates tied weights (e.g. LM heads).
    atomic_save(folder / WEIGHTS_NAME, lambda tmp: save_model(model, tmp))
    payload = record_to_json(
        {**record, "weights": WEIGHTS_NAME, "pruned_fingerprint": architecture_fingerprint(model)}
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
        example_inputs: Only for files of format 1 (which replay by tracing): inputs to trace the
            graph with; default: built from the spec in the file. Format-2 files replay without
            tracing.

    Returns:
        ``model``, pruned exactly as the saved one and holding its weights.

    Raises:
        PruningFileError: missing files, a malformed config, an unknown ``format_version``, or an
            architecture that differs from the saved one (the message names the first differing
            parameter).
    """
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
    version = record.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise PruningFileError(
            f"load_pruned(): {str(cfg_file)!r} has format_version {version!r}; this torchpare reads "
            f"versions {list(_READABLE_VERSIONS)}. Save it again with a matching torchpare."
        )
    _check_fingerprint(model, fingerprint, f"load_pruned({str(folder)!r})")
    if version == 1:
        _replay_traced_steps(model, record, steps, example_inputs, cfg_file)
    else:
        _replay_steps(model, record, steps, cfg_file)
    expected = record.get("pruned_fingerprint")
    if expected is not None and architecture_fingerprint(model) != expected:
        rebuilt = dict((n, s) for n, s in architecture_fingerprint(model))
        first = next((n for n, s in expected if rebuilt.get(n) != s), "?")
        raise PruningFileError(
            f"load_pruned(): replaying the recorded pruning steps does not give the saved architecture "
            f"(first difference at parameter {first!r}); the saved model was changed after torchpare "
            "pruned it (e.g. DependencyGraph.prune called directly). Prune with torchpare.prune.prune, "
            "deploy_subnet or torchpare.prune.prune_by_plan so every step is recorded."
        )
    missing, unexpected = load_model(model, str(weights_file), strict=False)
    if missing or unexpected:
        raise PruningFileError(
            f"load_pruned(): weights in {str(weights_file)!r} do not fit the rebuilt model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    return model


def _replay_steps(model: nn.Module, record: dict[str, Any], steps: list[Any], cfg_file: Path) -> None:
    """Format 2: apply each step's recorded edits; no trace, so no dependence on the tracer."""
    if not steps:
        return
    where = f"load_pruned({str(cfg_file)!r})"
    # The trace notes per-stage attentions (SegFormer's config.hidden_sizes[stage]); a replay does not
    # trace, so note them here, or the config the classifier reshapes to keeps the unpruned width.
    for name, module in model.named_modules():
        note_stage(module, name)
    saved = {k: v for k, v in record.items() if k not in ("weights", "pruned_fingerprint")}
    replayed = {**saved, "steps": []}
    for n, step in enumerate(steps):
        edits = step_edits(step, where)
        if isinstance(step, Mapping) and "restructure" in step:  # MoE experts split / fused back
            replay_restructure(model, step["restructure"], f"{where}: step {n}")
        try:
            apply_edits(model, edits)
        except (ValueError, AttributeError, TypeError) as exc:
            raise PruningFileError(
                f"{where}: step {n} does not fit {type(model).__name__} ({exc}); pass a fresh, unpruned "
                "instance of the model the file was saved from."
            ) from exc
        replayed["steps"].append(step)
    set_record(model, replayed)


def _replay_traced_steps(
    model: nn.Module, record: dict[str, Any], steps: list[Any], example_inputs: Any, cfg_file: Path
) -> None:
    """Format 1 (plans keyed by traced group ids): re-trace and re-apply each plan; recorded anew in
    format 2. Such a file only loads where the tracer finds the same groups as when it was saved."""
    if not steps:
        return
    if example_inputs is None:
        if record.get("example_inputs") is None:
            raise PruningFileError(f"load_pruned(): {str(cfg_file)!r} stores no example-input spec.")
        device = next((p.device for p in model.parameters()), None)
        example_inputs = inputs_from_spec(record["example_inputs"], device)
    begin_record(model, example_inputs)
    graph = None
    graph_ignored: list[str] | None = None
    for step in steps:
        if graph is None or step["ignored"] != graph_ignored:
            graph_ignored = list(step["ignored"])
            graph = DependencyGraph.build(model, example_inputs, ignored=tuple(graph_ignored))
        try:
            _apply_plan(graph, {gid: list(idx) for gid, idx in step["plan"].items()}, retrace=True, record=True)
        except KeyError as exc:
            raise PruningFileError(
                f"load_pruned(): {str(cfg_file)!r} is a format-1 file whose plans name traced group ids, "
                f"and this model traces differently ({exc}; e.g. another transformers release). "
                "Load it with the versions it was saved under and save it again: new files (format 2) "
                "record module and tensor names instead."
            ) from exc


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
        # Not model_io.call_model on purpose: the exporter hands keyword inputs over positionally, so
        # they are zipped back to their names here, with the export-only extras (``use_cache=False``).
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
