"""Save and reload pruned Hugging Face models as ordinary ``save_pretrained`` folders.

A pruned transformer often has widths its config cannot state: heads or FFN units that differ per
layer (global pruning), a hidden width that is not ``heads * head_size`` (BERT, ViT and GPT-2 derive
the head size from the hidden size), or a hidden width LLaMA's config validation rejects. Plain
``AutoModel.from_pretrained`` then fails (``hidden size (83) is not a multiple of the number of
attention heads``) or rebuilds the unpruned shapes.

:func:`save_pretrained` writes the usual folder (``config.json`` + safetensors, through the model's
own ``save_pretrained``) and, next to it, ``torchpare_widths.json``: the per-layer parameter shapes
and module attributes (head counts, head sizes, ...) that differ from what the config builds, plus the
config overrides needed to build a valid skeleton. :func:`from_pretrained` rebuilds the model from
the config, gives every layer its saved shape and attributes, and loads the weights; it needs no
original model. Where the widths are uniform and the config can state them, the config is updated
and the folder also loads with plain ``AutoModel.from_pretrained``; :func:`plain_format_problems`
tells which case a model is in, and :func:`torchpare.prune.prune` warns up front.

A sentence-transformers folder (``modules.json``) is handled too: :func:`save_pretrained` on a
``SentenceTransformer`` writes the file into its transformer sub-folder, and :func:`from_pretrained`
returns a ``SentenceTransformer`` with the pruned encoder.

Example:
    >>> import tempfile, torch
    >>> import transformers
    >>> from torchpare.prune import from_pretrained, save_pretrained
    >>> from torchpare.prune.graph import DependencyGraph
    >>> config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    >>> model = transformers.BertModel(config).eval()
    >>> ids = torch.randint(0, 32, (1, 5))
    >>> graph = DependencyGraph.build(model, {"input_ids": ids})
    >>> heads = [g for g in graph.groups() if g.unit == "head"]
    >>> graph.prune({heads[0].id: [1]})  # layer 0 keeps 1 head, layer 1 keeps 2
    >>> plain_format_problems(model)[0]
    'parameter encoder.layer.0.attention.self.query.weight: (8, 16) here, (16, 16) from the config'
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_pretrained(model, folder)
    >>> again = from_pretrained(folder)
    >>> torch.allclose(again(ids).last_hidden_state, model(ids).last_hidden_state)
    True
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare._utils import atomic_write_bytes
from torchpare.prune.moe_experts import split_experts, split_reasons
from torchpare.prune.rules.hf_alibi import alibi_heads, alibi_problems, restore_alibi_heads
from torchpare.prune.rules.split_experts import SplitExperts

__all__ = [
    "save_pretrained",
    "from_pretrained",
    "plain_format_problems",
    "warn_if_not_plain",
    "PretrainedFolderError",
    "WIDTHS_NAME",
]

WIDTHS_NAME = "torchpare_widths.json"
_FORMAT = "torchpare-hf-widths"
_VERSION = 1
# Config fields that hold the FFN width, and the (last) module names of the FFN's first projection.
_FFN_FIELDS = ("intermediate_size", "n_inner", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "hidden_dim")
_FFN_NAMES = ("intermediate.dense", "mlp.fc1", "mlp.c_fc", "mlp.up_proj", "ffn.lin1", "fc1")
_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_head")
_MOE_FIELDS = ("moe_intermediate_size", "intermediate_size")  # the experts' width (Qwen2-MoE, Mixtral)
_HEAD_SIZE_ATTRS = ("head_dim", "attention_head_size", "head_size")


class PretrainedFolderError(ValueError):
    """A pruned Hugging Face folder cannot be written or rebuilt exactly (the message says why)."""


# -- what a config builds --------------------------------------------------------------------------
def _is_hf(model: Any) -> bool:
    config = getattr(model, "config", None)
    return isinstance(model, nn.Module) and callable(getattr(model, "save_pretrained", None)) and callable(
        getattr(config, "to_dict", None)
    )


def _attrs(module: nn.Module) -> dict[str, Any]:
    """A module's public size-like attributes: ints, floats and tuples/lists of ints (not bools)."""
    out: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = value
        elif isinstance(value, (tuple, list)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            out[key] = list(value)
    return out


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    shapes = {n: list(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    shapes.update({n: list(b.shape) for n, b in model.named_buffers(remove_duplicate=False)})
    return shapes


def _build(model_class: type, config: Any, device: str | torch.device) -> nn.Module:
    with torch.device(device):
        return model_class(config)


def _meta_skeleton(model_class: type, config: Any) -> nn.Module:
    """The architecture ``config`` builds, on the meta device (no memory, no initialisation cost)."""
    return _build(model_class, copy.deepcopy(config), "meta")


def _compare(skeleton: nn.Module, model: nn.Module, base: nn.Module | None = None) -> list[str]:
    """Where ``model`` differs from ``skeleton``: parameter/buffer shapes, then module attributes.

    With ``base`` (what the model's config built before any update), an attribute pruning left as it
    was (a stale copy no forward reads, e.g. LLaMA MLP's ``intermediate_size``) is not a difference."""
    problems = []
    have, want = _shapes(model), _shapes(skeleton)
    if set(have) != set(want):
        odd = sorted(set(have) ^ set(want))
        return [f"the module tree differs from what the config builds (e.g. {odd[0]!r})"]
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    for name, shape in have.items():
        if shape != want[name]:
            kind = "parameter" if name in params else "buffer"
            problems.append(f"{kind} {name}: {tuple(shape)} here, {tuple(want[name])} from the config")
    skel_modules = dict(skeleton.named_modules(remove_duplicate=False))
    base_modules = dict(base.named_modules(remove_duplicate=False)) if base is not None else {}
    for name, module in model.named_modules(remove_duplicate=False):
        ref = _attrs(skel_modules[name]) if name in skel_modules else {}
        unchanged = _attrs(base_modules[name]) if name in base_modules else {}
        for key, value in _attrs(module).items():
            if key in ref and ref[key] != value and unchanged.get(key, object()) != value:
                problems.append(f"attribute {name or type(model).__name__}.{key}: {value} here, {ref[key]} from the config")
    return problems


def _uniform(values: list[int]) -> int | None:
    return values[0] if values and len(set(values)) == 1 else None


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    """The model's input embedding, or ``None`` where it has none (vision models such as SegFormer
    raise ``NotImplementedError`` from ``get_input_embeddings``)."""
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        return getter()
    except NotImplementedError:
        return None


def _fused_experts_width(module: nn.Module) -> bool:
    """``module`` holds fused MoE experts (``gate_up_proj (E, 2I, H)``, ``down_proj (E, H, I)``)."""
    gu, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return (
        isinstance(gu, torch.Tensor) and isinstance(down, torch.Tensor) and gu.dim() == 3 and down.dim() == 3
        and gu.shape[1] == 2 * down.shape[2]
    )


def _plain_updates(model: nn.Module) -> dict[str, int]:
    """Config fields that would state ``model``'s widths, where every layer agrees on them."""
    config = model.config
    updates: dict[str, int] = {}
    ffn, heads, kv_heads, head_sizes = [], [], [], []
    for name, module in model.named_modules():
        if name.endswith(_FFN_NAMES) and isinstance(module, nn.Module):
            width = getattr(module, "out_features", None) or getattr(module, "nf", None)
            if isinstance(width, int):
                ffn.append(width)
        children = dict(module.named_children())
        head_dim = next((getattr(module, a) for a in _HEAD_SIZE_ATTRS if isinstance(getattr(module, a, None), int)), None)
        if head_dim and {"q_proj", "k_proj"} <= set(children) and isinstance(children["q_proj"], nn.Linear):
            heads.append(children["q_proj"].out_features // head_dim)
            kv_heads.append(children["k_proj"].out_features // head_dim)
            head_sizes.append(head_dim)
        elif head_dim:
            count = next((getattr(module, a) for a in _HEAD_ATTRS if isinstance(getattr(module, a, None), int)), None)
            if count:
                heads.append(count)
                head_sizes.append(head_dim)
    embeddings = _input_embeddings(model)
    hidden = embeddings.embedding_dim if isinstance(embeddings, nn.Embedding) else None
    if hidden is None:  # vision models: the most common normalisation width is the residual stream
        norms = [m.weight.shape[0] for m in model.modules()
                 if "Norm" in type(m).__name__ and isinstance(getattr(m, "weight", None), torch.Tensor)
                 and m.weight.dim() == 1]
        hidden = Counter(norms).most_common(1)[0][0] if norms else None
    candidates = {
        "hidden_size": hidden,
        "num_attention_heads": _uniform(heads),
        "num_key_value_heads": _uniform(kv_heads),
        "head_dim": _uniform(head_sizes),
    }
    for field in _FFN_FIELDS:
        candidates[field] = _uniform(ffn)
    # fused MoE experts (one width per layer): the config's experts width, where all layers agree
    experts = [int(m.down_proj.shape[2]) for m in model.modules() if _fused_experts_width(m)]
    moe_field = next((f for f in _MOE_FIELDS if isinstance(getattr(config, f, None), int)), None)
    if experts and moe_field is not None:
        width = _uniform(experts)
        if candidates.get(moe_field) not in (None, width):
            width = None  # dense FFNs and experts disagree on one field: leave it
        candidates[moe_field] = width
    for field, value in candidates.items():
        current = getattr(config, field, None)
        if value is not None and isinstance(current, int) and not isinstance(current, bool) and current != value:
            updates[field] = value
    return updates


def _with_updates(config: Any, updates: Mapping[str, int]) -> Any:
    new = copy.deepcopy(config)
    for field, value in updates.items():
        setattr(new, field, value)
    # Validating configs (transformers >= 5) check consistency on construction, not on setattr.
    return type(new).from_dict(new.to_dict())


def plain_format_problems(model: nn.Module) -> list[str]:
    """Why ``model.save_pretrained`` + ``AutoModel.from_pretrained`` would not rebuild ``model`` exactly.

    The model's config, with every width that all layers agree on written into it, is built on the meta
    device and compared with ``model``: parameter and buffer shapes, then the size attributes of every
    module (head counts, head sizes). An empty list means the plain format round-trips.

    Args:
        model: A (pruned) Hugging Face ``PreTrainedModel``.

    Returns:
        Human-readable differences (empty when the plain format works).

    Raises:
        TypeError: ``model`` is not a Hugging Face model (no ``config`` / ``save_pretrained``).

    Example:
        >>> import transformers
        >>> config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=32)
        >>> plain_format_problems(transformers.BertModel(config))
        []
    """
    if not _is_hf(model):
        raise TypeError(
            f"plain_format_problems(): {type(model).__name__} is not a Hugging Face model (it needs "
            "`config` and `save_pretrained`); save plain models with torchpare.prune.save_pruned."
        )
    split = split_reasons(model)  # MoE experts of their own widths: no config field states them
    try:
        skeleton = _meta_skeleton(type(model), _with_updates(model.config, _plain_updates(model)))
    except Exception as exc:  # the config's own validation (e.g. hidden size vs heads)
        return [*split, f"the config cannot state these widths: {type(exc).__name__}: {str(exc).strip()[:300]}"]
    if split:
        split_experts(skeleton, _split_names(model), check=False)
    return split + _compare(skeleton, model, _base_skeleton(model)) + alibi_problems(model)


def _split_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, SplitExperts)]


def _base_skeleton(model: nn.Module) -> nn.Module | None:
    try:
        return _meta_skeleton(type(model), model.config)
    except Exception:  # a config that no longer validates: compare every attribute
        return None


def warn_if_not_plain(model: nn.Module, who: str = "prune()") -> None:
    """Warn when a pruned Hugging Face ``model`` cannot round-trip through plain ``from_pretrained``.

    Models that are not Hugging Face models are ignored. Called by :func:`torchpare.prune.prune`.

    Example:
        >>> warn_if_not_plain(torch.nn.Linear(2, 2))  # not a Hugging Face model: nothing to say
    """
    plain_load = "model.save_pretrained + AutoModel.from_pretrained"
    if _is_sentence_transformer(model):
        # Its own `config` is not a transformers config: the encoder inside is what a folder rebuilds.
        try:
            model = _transformer_of(model)
        except TypeError:
            return
        plain_load = "model.save + SentenceTransformer(folder)"
    if not _is_hf(model):
        return
    problems = plain_format_problems(model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        warnings.warn(
            f"{who}: the pruned widths of {type(model).__name__} cannot be stated in its config, so "
            f"{plain_load} will not rebuild it: {problems[0]}{more}. "
            "Save with torchpare.prune.save_pretrained(model, path) and reload with "
            "torchpare.prune.from_pretrained(path); or prune uniformly (global_pruning=False) the widths "
            "the config can state.",
            UserWarning,
            stacklevel=4,  # warn_if_not_plain <- prune's worker <- prune() <- the caller
        )


# -- save ------------------------------------------------------------------------------------------
def _skeleton_config(model_class: type, config_dict: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A config built from ``config_dict`` (plus the fewest overrides that make it valid) and the
    overrides used. Configs that validate (LLaMA: hidden size a multiple of the heads) reject some
    pruned values; the skeleton only fixes the module tree, every shape is restored afterwards."""
    config_class = model_class.config_class
    overrides: dict[str, Any] = {}
    try:
        return config_class.from_dict(dict(config_dict)), overrides
    except Exception as first:
        heads, hidden = config_dict.get("num_attention_heads"), config_dict.get("hidden_size")
        if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads:
            overrides["hidden_size"] = heads * -(-hidden // heads)
            try:
                return config_class.from_dict({**config_dict, **overrides}), overrides
            except Exception:
                pass
        raise PretrainedFolderError(
            f"save_pretrained(): the config of {model_class.__name__} does not build a model "
            f"({type(first).__name__}: {first}); torchpare cannot rebuild it on load."
        ) from None


def _tied(model: nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _is_sentence_transformer(model: Any) -> bool:
    return type(model).__name__ == "SentenceTransformer" and callable(getattr(model, "save", None))


def _transformer_of(st_model: Any) -> nn.Module:
    """The Hugging Face encoder inside a SentenceTransformer."""
    for module in st_model.children():
        for attr in ("model", "auto_model"):
            inner = getattr(module, attr, None)
            if _is_hf(inner):
                return inner
    raise TypeError(f"{type(st_model).__name__}: no Hugging Face transformer module inside.")


def save_pretrained(model: nn.Module, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a pruned Hugging Face model as a ``save_pretrained`` folder that :func:`from_pretrained` rebuilds.

    Widths every layer agrees on (and the config can state) are written into ``model.config``; then
    ``model.save_pretrained(path, **kwargs)`` writes the config and the safetensors weights, and
    ``torchpare_widths.json`` (written atomically) records the per-layer shapes and module attributes
    that differ from what the config builds. When it records none, the folder also loads with plain
    ``AutoModel.from_pretrained``. A ``SentenceTransformer`` is saved with its own ``save`` and the
    file goes into its transformer sub-folder.

    Args:
        model: A (pruned) ``PreTrainedModel`` or ``SentenceTransformer``.
        path: Target folder (created if missing).
        **kwargs: Passed to ``model.save_pretrained`` (or ``SentenceTransformer.save``).

    Returns:
        The folder written.

    Raises:
        TypeError: ``model`` is not a Hugging Face / sentence-transformers model.
        PretrainedFolderError: the config cannot build a model with the same module tree.

    Example:
        >>> import tempfile, transformers
        >>> config = transformers.GPT2Config(vocab_size=16, n_embd=8, n_layer=1, n_head=2, n_positions=8)
        >>> folder = save_pretrained(transformers.GPT2Model(config), tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors', 'torchpare_widths.json']
    """
    folder = Path(path)
    if _is_sentence_transformer(model):
        inner = _transformer_of(model)
        model.save(str(folder), **kwargs)
        entries = json.loads((folder / "modules.json").read_text())
        paths = [e.get("path", "") for e in entries if "Transformer" in str(e.get("type", ""))]
        if not paths:
            raise PretrainedFolderError(f"save_pretrained(): no Transformer module in {str(folder / 'modules.json')!r}.")
        sub = folder / paths[0]
        _write_widths(inner, sub, not plain_format_problems(inner))
        return folder
    if not _is_hf(model):
        raise TypeError(
            f"save_pretrained(): {type(model).__name__} is not a Hugging Face model; save it with "
            "torchpare.prune.save_pruned(model, path)."
        )
    updates = _plain_updates(model)
    plain = not plain_format_problems(model)
    if plain:
        for field, value in updates.items():
            setattr(model.config, field, value)
    # A config the library refuses to write (LLaMA: hidden size not a multiple of the heads) is saved
    # with the fewest overrides that make it valid; the true values go to torchpare_widths.json.
    _, overrides = _skeleton_config(type(model), model.config.to_dict())
    restore = {k: getattr(model.config, k) for k in overrides}
    try:
        for field, value in overrides.items():
            setattr(model.config, field, value)
        model.save_pretrained(str(folder), **kwargs)
    finally:
        for field, value in restore.items():
            setattr(model.config, field, value)
    _write_widths(model, folder, plain and not restore, restore)
    return folder


def _write_widths(model: nn.Module, folder: Path, plain: bool, restore: Mapping[str, Any] | None = None) -> None:
    config_dict = json.loads((folder / "config.json").read_text())
    config, overrides = _skeleton_config(type(model), config_dict)
    restore = {**{k: config_dict[k] for k in overrides}, **(restore or {})}
    skeleton = _meta_skeleton(type(model), config)
    split = _split_names(model)
    split_experts(skeleton, split, check=False)  # the same experts split, in their config widths
    have, want = _shapes(model), _shapes(skeleton)
    if set(have) != set(want):
        odd = sorted(set(have) ^ set(want))[:3]
        raise PretrainedFolderError(
            f"save_pretrained(): {type(model).__name__}'s module tree differs from what its config builds "
            f"(e.g. {odd}); modules added or removed after loading cannot be rebuilt from the config."
        )
    skel_modules = dict(skeleton.named_modules(remove_duplicate=False))
    attributes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        ref = _attrs(skel_modules[name])
        diff = {k: v for k, v in _attrs(module).items() if k in ref and ref[k] != v}
        if diff:
            attributes[name] = diff
    record = {
        "format": _FORMAT,
        "version": _VERSION,
        "model_class": type(model).__name__,
        "config_overrides": overrides,
        "config_restore": restore,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "shapes": {n: s for n, s in have.items() if s != want[n]},
        "attributes": attributes,
        "tied": _tied(model),
        "split_experts": split,
        "alibi_heads": alibi_heads(model),  # BLOOM: the original heads whose ALiBi rows each layer adds
        "plain": plain,
    }
    atomic_write_bytes(folder / WIDTHS_NAME, json.dumps(record, indent=1).encode())


# -- load ------------------------------------------------------------------------------------------
def _model_class(name: str, model_class: type | None) -> type:
    if model_class is not None:
        return model_class
    import transformers

    cls = getattr(transformers, name, None)
    if not isinstance(cls, type):
        raise PretrainedFolderError(
            f"from_pretrained(): transformers has no class {name!r} (the saved architecture); pass "
            "model_class= explicitly."
        )
    return cls


def _file_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor shapes in the folder's safetensors files (read from the headers only)."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[key] = list(f.get_slice(key).get_shape())
    return shapes


def _apply_widths(model: nn.Module, record: Mapping[str, Any]) -> None:
    """Give a freshly built (possibly meta) model the recorded attributes and empty tensors of the
    recorded shapes, so the library's own loader fills them."""
    split = record.get("split_experts") or []
    if split:  # MoE experts of their own widths: the same modules split first
        try:
            split_experts(model, [str(n) for n in split], check=False)
        except ValueError as exc:
            raise PretrainedFolderError(f"from_pretrained(): {WIDTHS_NAME}: {exc}") from exc
    for name, attrs in record["attributes"].items():
        module = model.get_submodule(name)
        for key, value in attrs.items():
            old = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(old, tuple) else value)
    for name, shape in record["shapes"].items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if owner._parameters.get(leaf) is not None:
            old = owner._parameters[leaf]
            new = torch.empty(shape, device=old.device, dtype=old.dtype)
            owner._parameters[leaf] = nn.Parameter(new, requires_grad=old.requires_grad)
        elif owner._buffers.get(leaf) is not None:
            old_buffer = owner._buffers[leaf]
            owner._buffers[leaf] = torch.empty(shape, device=old_buffer.device, dtype=old_buffer.dtype)
        else:
            raise PretrainedFolderError(
                f"from_pretrained(): {WIDTHS_NAME} records {name!r}, which {type(model).__name__} does not have."
            )


def from_pretrained(path: str | os.PathLike[str], *, model_class: type | None = None, **kwargs: Any) -> nn.Module:
    """Rebuild a pruned Hugging Face model (or sentence-transformers model) saved by :func:`save_pretrained`.

    The model is built from ``config.json`` (with the recorded overrides that make it valid), every
    layer gets its saved shapes and attributes (head counts, head sizes) before the library's own
    ``from_pretrained`` loads the safetensors weights (so checkpoint key conversions, dtypes, shards and
    tied weights work as usual), and the recorded config fields are restored. No original model is
    needed. A folder without ``torchpare_widths.json`` is loaded with the class's own ``from_pretrained``.

    Args:
        path: The folder (a sentence-transformers folder with ``modules.json`` gives a
            ``SentenceTransformer``).
        model_class: The ``PreTrainedModel`` class; default: the saved class name in ``transformers``.
        **kwargs: Passed to ``from_pretrained`` (e.g. ``dtype``, ``device_map``; for a
            sentence-transformers folder, ``device``).

    Returns:
        The model in eval mode.

    Raises:
        PretrainedFolderError: a missing or malformed file, or a model whose shapes after loading differ
            from the recorded ones (the message names the tensor).

    Example:
        >>> import tempfile, transformers
        >>> config = transformers.GPT2Config(vocab_size=16, n_embd=8, n_layer=1, n_head=2, n_positions=8)
        >>> folder = save_pretrained(transformers.GPT2LMHeadModel(config), tempfile.mkdtemp())
        >>> type(from_pretrained(folder)).__name__
        'GPT2LMHeadModel'
    """
    folder = Path(path)
    if (folder / "modules.json").is_file():
        return _load_sentence_transformer(folder, **kwargs)
    return _load_hf(folder, model_class, **kwargs)


def _load_hf(folder: Path, model_class: type | None, **kwargs: Any) -> nn.Module:
    cfg_file, widths_file = folder / "config.json", folder / WIDTHS_NAME
    if not cfg_file.is_file():
        raise PretrainedFolderError(
            f"from_pretrained(): {str(cfg_file)!r} not found; pass a folder written by save_pretrained()."
        )
    try:
        config_dict = json.loads(cfg_file.read_text())
        record = json.loads(widths_file.read_text()) if widths_file.is_file() else None
    except json.JSONDecodeError as exc:
        raise PretrainedFolderError(f"from_pretrained(): malformed JSON in {str(folder)!r} ({exc}).") from None
    if record is not None and (record.get("format") != _FORMAT or record.get("version") != _VERSION):
        raise PretrainedFolderError(
            f"from_pretrained(): {str(widths_file)!r} is format {record.get('format')!r} version "
            f"{record.get('version')!r}; this torchpare reads {_FORMAT!r} version {_VERSION}."
        )
    arch = (record or {}).get("model_class") or (config_dict.get("architectures") or [None])[0]
    if arch is None and model_class is None:
        raise PretrainedFolderError(f"from_pretrained(): {str(cfg_file)!r} names no architecture; pass model_class=.")
    cls = _model_class(arch, model_class)
    if record is None:
        return cls.from_pretrained(str(folder), **kwargs).eval()
    try:
        config = cls.config_class.from_dict({**config_dict, **record["config_overrides"]})
        expected = {n: list(s) for n, s in record["shapes"].items()}
        tied, restore = record["tied"], dict(record.get("config_restore") or {})
    except (KeyError, TypeError, AttributeError) as exc:
        raise PretrainedFolderError(f"from_pretrained(): malformed {str(widths_file)!r} ({exc}).") from None
    if record.get("attn_implementation") and "attn_implementation" not in kwargs:
        kwargs["attn_implementation"] = record["attn_implementation"]  # what the saved model ran with

    def __init__(self: nn.Module, config: Any, *args: Any, **kw: Any) -> None:
        cls.__init__(self, config, *args, **kw)
        _apply_widths(self, record)

    # A throw-away subclass resizes the layers right after construction, inside the library's
    # from_pretrained, which then loads the weights into the pruned shapes; the class is reset after.
    shell = type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})
    try:
        model = shell.from_pretrained(str(folder), config=config, **kwargs)
    except RuntimeError as exc:
        odd = [f"{n} {tuple(s)} in the file, {tuple(expected[n])} recorded"
               for n, s in _file_shapes(folder).items() if n in expected and s != expected[n]]
        raise PretrainedFolderError(
            f"from_pretrained(): the weights in {str(folder)!r} do not fit the shapes recorded in "
            f"{WIDTHS_NAME}: {'; '.join(odd[:3]) or str(exc)[:500]}"
        ) from exc
    model.__class__ = cls
    for names in tied:  # tied weights are saved once: share them again in their pruned shapes
        param = model.get_parameter(names[0])
        for other in names[1:]:
            owner, _, leaf = other.rpartition(".")
            model.get_submodule(owner)._parameters[leaf] = param
    for name, shape in _shapes(model).items():
        if name in expected and shape != expected[name]:
            raise PretrainedFolderError(
                f"from_pretrained(): {name!r} has shape {tuple(shape)} after loading but "
                f"{tuple(expected[name])} was saved."
            )
    for key, value in restore.items():
        setattr(model.config, key, value)
    restore_alibi_heads(model, record.get("alibi_heads") or {}, f"from_pretrained(): {str(widths_file)!r}")
    return model.eval()


def _load_sentence_transformer(folder: Path, **kwargs: Any) -> nn.Module:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError("from_pretrained(): a sentence-transformers folder needs sentence-transformers") from exc
    entries = json.loads((folder / "modules.json").read_text())
    sub = next((folder / e.get("path", "") for e in entries if (folder / e.get("path", "") / WIDTHS_NAME).is_file()), None)
    if sub is None:
        return SentenceTransformer(str(folder), **kwargs)
    pruned = _load_hf(sub, None)
    # sentence-transformers builds its encoder with AutoModel from the config, in the unpruned shapes:
    # let it (mismatched weights re-initialised, quietly), then swap in the rebuilt pruned encoder.
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        st = SentenceTransformer(str(folder), model_kwargs={"ignore_mismatched_sizes": True}, **kwargs)
    except Exception as exc:
        raise PretrainedFolderError(
            f"from_pretrained(): sentence-transformers could not build the modules of {str(folder)!r} "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    for module in st.children():
        for attr in ("model", "auto_model"):
            if _is_hf(getattr(module, attr, None)):
                setattr(module, attr, pruned)
                return st.eval()
    raise PretrainedFolderError(f"from_pretrained(): no transformer module in the sentence-transformers folder {str(folder)!r}.")
