"""YAML run configs: load (a ``yaml.SafeLoader`` that also reads ``1e-3`` as a float), ``--set key.sub=value`` overrides, validation.

A config has these top-level sections (all optional except what the command needs)::

    name: digits_kd                 # label in results.json (default: the command)
    task: distill                   # written into the saved config.yaml; the command decides
    output: runs/digits_kd          # run folder (results, metrics, checkpoints, resolved config)
    data: {type: digits, seed: 0, label_fraction: 1.0}   # or table, image_folder, sentences, ... (docs/byo.md)
    model: {type: DigitsMLP, hidden: 16, checkpoint: null}   # the model trained (the student); or
    #      {factory: "my_pkg.models:build", args: {...}}, {hf: folder, task: ...}, {sentence_transformers: folder}
    teacher: {type: DigitsCNN, width: 32, checkpoint: runs/teacher/model.pt}
    teachers: {cnn: {type: DigitsCNN, ...}, small: {...}}     # MultiTeacherDistill's teachers
    students: {peer: {type: DigitsMLP, hidden: 16}}           # OnlineDistill's peers of ``model``
    algorithm: {type: SingleTeacherDistill, distiller: {...}}   # models filled in (see ALGORITHM_MODELS)
    pruner: {importance: l1, target_flops_ratio: 0.5}           # arguments of torchpare.prune.prune, or
    #       {type: RatioPruner, ratios: [0.5, 1.0], subnet: 0.5}  # a PRUNERS class + the subnet to deploy
    recover: {}                                                 # arguments of torchpare.distill.recover
    schedule: {epochs: 10, lr: 0.003, batch_size: 64}           # TrainConfig fields

:func:`validate_config` reports every problem at once, each with its key path, before anything trains.

Example:
    >>> cfg = apply_overrides({"schedule": {"lr": 0.1}}, ["schedule.lr=0.01", "model.type=DigitsMLP"])
    >>> cfg["schedule"]["lr"], cfg["model"]
    (0.01, {'type': 'DigitsMLP'})
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from torchpare._utils import did_you_mean
from torchpare.engine.schedule import TrainConfig

__all__ = [
    "ConfigError",
    "load_config",
    "apply_overrides",
    "validate_config",
    "save_config",
    "SECTIONS",
    "TASK_NEEDS",
    "ALGORITHM_MODELS",
    "PRUNER_KEYS",
    "algorithm_models",
]

SECTIONS = (
    "name", "task", "output", "data", "model", "teacher", "teachers", "students", "algorithm", "pruner",
    "recover", "schedule",
)
TASK_NEEDS = {
    "train": ("model",),
    "distill": ("model", "algorithm"),  # + the model sections the algorithm takes (ALGORITHM_MODELS)
    "prune": ("model", "pruner"),
    "finetune": ("model",),
    "evaluate": ("model",),
}
# Constructor argument of an ALGORITHMS class -> the config section the engine builds it from.
# ``model``/``student``: the ``model`` section; ``teachers``: name -> model config; ``students``: the
# ``model`` section (named "model", the one evaluated and saved) plus the peers of the ``students`` section.
ALGORITHM_MODELS = {
    "student": "model",
    "model": "model",
    "teacher": "teacher",
    "teachers": "teachers",
    "students": "students",
}
# Keys of a ``pruner`` section with a ``type`` that the engine reads itself (not constructor arguments).
PRUNER_KEYS = ("subnet", "seed")
_SUBNET_WORDS = ("sample", "min", "max")
# Keys of the model/data sections read by the engine itself, not passed to the registered builder.
_ENGINE_KEYS = {
    "model": ("type", "checkpoint"),
    "teacher": ("type", "checkpoint"),
    "data": ("type", "label_fraction", "batch_size"),
}


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that also reads ``1e-3`` as a float, as YAML 1.2 does."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config that cannot run; ``errors`` lists every ``"key.path: problem"``."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        if len(self.errors) == 1:  # one problem: one line
            super().__init__(f"config {source}: {self.errors[0]}")
            return
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"config {source}: {len(self.errors)} problem(s):\n{lines}")


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config with ``yaml.safe_load``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: invalid YAML, or the top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_config(): no config file at '{path}'.")
    try:
        cfg = _safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"'{path}'", [f"<file>: not valid YAML ({str(exc).splitlines()[0]})"]) from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"'{path}'", [f"<top level>: must be a mapping of sections, got {type(cfg).__name__}"]
        )
    return cfg


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with each ``"a.b.c=value"`` set (``value`` parsed as YAML: 0.1, true, [1, 2]).

    Raises:
        ConfigError: an override without ``=``, or a path through a value that is not a mapping.
    """
    out = copy.deepcopy(dict(cfg))
    errors: list[str] = []
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            errors.append(f"--set {item!r}: expected key.sub=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = _safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node: Any = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part, {}), dict):
                errors.append(
                    f"{'.'.join(parts[: i + 1])}: --set {item!r} goes through a value that is not a mapping"
                )
                break
            node = node.setdefault(part, {})
        else:
            node[parts[-1]] = value
    if errors:
        raise ConfigError("overrides", errors)
    return out


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (next to the results)."""
    from torchpare._utils import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(dict(cfg), sort_keys=False).encode())


def _registered_type(cfg: Any, key: str, registry: Any, errors: list[str]) -> Any:
    """The class a section's ``type`` names in ``registry``; ``None`` with the problem recorded under ``key``."""
    if not isinstance(cfg, dict):
        errors.append(f"{key}: must be a mapping with a 'type', got {type(cfg).__name__}")
        return None
    if "type" not in cfg:
        errors.append(f"{key}.type: missing; one of {', '.join(registry.names())}")
        return None
    try:
        return registry.get(cfg["type"])
    except (KeyError, TypeError) as exc:
        errors.append(f"{key}.type: {exc}")
        return None


def _check_registered(
    cfg: Any,
    key: str,
    registry: Any,
    errors: list[str],
    skip: Sequence[str] = (),
    injected: Sequence[str] = (),
) -> None:
    from torchpare.registry import check_arguments

    target = _registered_type(cfg, key, registry, errors)
    if target is None:
        return
    kwargs = {k: v for k, v in cfg.items() if k not in skip and k != "type"}
    kwargs.update({k: None for k in injected})
    try:
        check_arguments(target, kwargs, where=f"{key} ({cfg['type']})")
    except TypeError as exc:
        errors.append(f"{key}: {exc}")


def _check_function_args(cfg: Any, key: str, func: Any, errors: list[str], injected: Sequence[str]) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        errors.append(f"{key}: must be a mapping of arguments, got {type(cfg).__name__}")
        return
    params = inspect.signature(func).parameters
    accepted = [n for n in params if n not in injected]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for k in cfg:
        if k not in accepted:
            errors.append(
                f"{key}.{k}: unknown argument{did_you_mean(k, accepted)}; valid: {', '.join(accepted)}"
            )


def algorithm_models(target: Any) -> dict[str, str]:
    """The model arguments of an ``ALGORITHMS`` class that the engine fills in: ``{argument: section}``.

    Example:
        >>> from torchpare.registry import ALGORITHMS
        >>> algorithm_models(ALGORITHMS.get("SelfDistill")), algorithm_models(ALGORITHMS.get("MultiTeacher"))
        ({'model': 'model'}, {'student': 'model', 'teachers': 'teachers'})
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # pragma: no cover - classes always have a signature
        return {}
    return {name: ALGORITHM_MODELS[name] for name in params if name in ALGORITHM_MODELS}


def _check_model_section(section: Any, key: str, errors: list[str]) -> None:
    from torchpare.engine.models import MODEL_SOURCES, source_errors
    from torchpare.registry import MODELS

    ckpt = section.get("checkpoint") if isinstance(section, dict) else None
    if ckpt is not None and not Path(str(ckpt)).exists():
        errors.append(f"{key}.checkpoint: no file at '{ckpt}'")
    if isinstance(section, dict) and any(k in section for k in MODEL_SOURCES[1:]):
        errors.extend(source_errors(section, key))  # factory / hf / sentence_transformers (engine.models)
        return
    if isinstance(section, dict) and "type" not in section and ckpt is not None:
        return  # a pruned model file carries its own architecture
    _check_registered(section, key, MODELS, errors, skip=("checkpoint",))


def _check_named_models(cfg: Mapping[str, Any], key: str, errors: list[str]) -> list[str]:
    """``teachers`` / ``students``: a non-empty mapping name -> model section; returns the names."""
    section = cfg.get(key)
    if section is None:
        return []
    if not isinstance(section, dict) or not section:
        errors.append(f"{key}: must be a non-empty mapping of name -> model section (type, checkpoint, ...)")
        return []
    for name, model in section.items():
        if key == "students" and name == "model":
            errors.append("students.model: 'model' names the model section's student; use another name")
        _check_model_section(model, f"{key}.{name}", errors)
    return [str(n) for n in section]


def _check_names(table: Any, key: str, names: Sequence[str], what: str, errors: list[str]) -> None:
    if not isinstance(table, dict):
        return
    for k in table:
        if k not in names:
            errors.append(f"{key}.{k}: not a {what} name{did_you_mean(str(k), names)}; {what}s: {', '.join(names)}")


def _check_algorithm(cfg: Mapping[str, Any], errors: list[str], named: Mapping[str, list[str]]) -> None:
    """The ``algorithm`` section and the model sections its class takes (``ALGORITHM_MODELS``)."""
    from torchpare.registry import ALGORITHMS, check_arguments

    algo = cfg.get("algorithm")
    if algo is None:
        return  # reported as missing
    target = _registered_type(algo, "algorithm", ALGORITHMS, errors)
    if target is None:
        return
    kind = algo["type"]
    models = algorithm_models(target)
    for arg, section in models.items():
        if arg in algo:
            errors.append(f"algorithm.{arg}: filled in from the '{section}' section; remove it here")
    kwargs = {k: v for k, v in algo.items() if k != "type" and k not in models}
    try:
        check_arguments(target, {**kwargs, **dict.fromkeys(models)}, where=f"algorithm ({kind})")
    except TypeError as exc:
        errors.append(f"algorithm: {exc}")
    own_check = getattr(target, "config_errors", None)  # an algorithm's checks of its values (AutoSlim)
    if callable(own_check):
        errors += [f"algorithm.{path}: {message}" for path, message in own_check(kwargs)]
    used = set(models.values())
    for section in ("teacher", "teachers", "students"):
        present = cfg.get(section) is not None
        if section in used and not present:
            errors.append(f"{section}: required by '{kind}' but missing")
        elif present and section not in used:
            errors.append(
                f"{section}: not used by {kind} (it takes {', '.join(models) or 'no model'}); remove the section"
            )
    teachers = named.get("teachers") or []
    if "teachers" in used and teachers:
        for arg in ("distillers", "weights", "teacher_ckpts"):
            _check_names(algo.get(arg), f"algorithm.{arg}", teachers, "teacher", errors)
        if isinstance(algo.get("distillers"), dict):
            for name in teachers:
                if name not in algo["distillers"]:
                    errors.append(f"algorithm.distillers: no entry for teacher '{name}'")
    if "students" in used and named.get("students") and isinstance(algo.get("pairs"), list):
        names = ["model", *named["students"]]
        for i, pair in enumerate(algo["pairs"]):
            for n in pair if isinstance(pair, list | tuple) else [pair]:
                if n not in names:
                    errors.append(
                        f"algorithm.pairs[{i}]: {n!r} is not a student{did_you_mean(str(n), names)}; "
                        f"students: {', '.join(names)}"
                    )
    ckpts = [("teacher_ckpt", algo.get("teacher_ckpt"))]
    if isinstance(algo.get("teacher_ckpts"), dict):
        ckpts += [(f"teacher_ckpts.{k}", v) for k, v in algo["teacher_ckpts"].items()]
    for key, path in ckpts:
        if isinstance(path, dict):  # {path: ..., strict: false}
            key, path = f"{key}.path", path.get("path")
        if isinstance(path, str) and not Path(path).exists():
            errors.append(f"algorithm.{key}: no file at '{path}'")
    _check_distillers(cfg, algo, models, errors)


def _model_skeleton(section: Any) -> Any:
    """The model a section builds, without its checkpoint (for recorder-source checks); ``None`` if it
    cannot be built here (a pruned-model folder, or a section with its own errors)."""
    from torchpare.registry import MODELS

    if isinstance(section, dict) and "factory" in section and "type" not in section:
        from torchpare.engine.models import build_source_model

        try:
            return build_source_model({k: v for k, v in section.items() if k != "checkpoint"})
        except Exception:  # noqa: BLE001 - the section's own check reports it
            return None
    if not isinstance(section, dict) or "type" not in section:
        return None
    try:
        return MODELS.build({k: v for k, v in section.items() if k != "checkpoint"})
    except Exception:  # noqa: BLE001 - the section's own check reports it
        return None


def _check_distillers(
    cfg: Mapping[str, Any], algo: Mapping[str, Any], models: Mapping[str, str], errors: list[str]
) -> None:
    """The distiller(s) of the algorithm section, checked by the distiller itself (the constructor's
    checks, plus recorder sources against the models), each problem under its key path."""
    from torchpare.registry import DISTILLERS

    entries: list[tuple[str, Any, Any]] = []  # (key, spec, teacher section or "student")
    if "distiller" in algo:
        teacher = cfg.get("teacher") if "teacher" in models else "student"
        entries.append(("algorithm.distiller", algo["distiller"], teacher))
    if isinstance(algo.get("distillers"), dict):
        teachers = cfg.get("teachers") if isinstance(cfg.get("teachers"), dict) else {}
        for name, spec in algo["distillers"].items():
            entries.append((f"algorithm.distillers.{name}", spec, teachers.get(name)))
    if not entries:
        return
    # sections with their own errors are not built (a missing checkpoint file does not matter here)
    bad_sections = {e.split(":", 1)[0].split(".")[0] for e in errors if ".checkpoint:" not in e}
    student = None if "model" in bad_sections else _model_skeleton(cfg.get("model"))
    for key, spec, teacher_section in entries:
        if not isinstance(spec, dict):
            continue  # reported by the algorithm's own argument check
        try:
            kind = DISTILLERS.get(spec.get("type", "ConfigurableDistiller"))
        except (KeyError, TypeError) as exc:
            errors.append(f"{key}.type: {exc.args[0] if exc.args else exc}")
            continue
        if not hasattr(kind, "config_errors"):
            continue
        if teacher_section == "student":
            teacher = student
        elif "teacher" in bad_sections or "teachers" in bad_sections:
            teacher = None
        else:
            teacher = _model_skeleton(teacher_section)
        for path, message in kind.config_errors(spec, student=student, teacher=teacher):
            errors.append(f"{key}{'.' + path if path else ''}: {message}")


def _is_ratio(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_pruner(pruner: Any, errors: list[str]) -> None:
    """``pruner``: arguments of ``torchpare.prune.prune``, or a ``PRUNERS`` class with ``subnet``/``seed``."""
    from torchpare.registry import PRUNERS

    if pruner is None:
        return
    for arg in ("model", "example_inputs"):
        if isinstance(pruner, dict) and arg in pruner:
            errors.append(f"pruner.{arg}: filled in by the engine (the model section); remove it here")
    if not (isinstance(pruner, dict) and "type" in pruner):
        # prune() owns its checks; the engine adds the key path
        from torchpare.prune.budget import prune_config_errors

        given = {k: v for k, v in pruner.items() if k not in ("model", "example_inputs")} if isinstance(
            pruner, dict) else pruner
        errors += [f"pruner{'.' + key if key else ''}: {message}" for key, message in prune_config_errors(given)]
        return
    n_errors = len(errors)
    _check_registered(pruner, "pruner", PRUNERS, errors, skip=(*PRUNER_KEYS, "model", "example_inputs"),
                      injected=("model", "example_inputs"))
    if len(errors) > n_errors and any(e.startswith("pruner.type:") for e in errors[n_errors:]):
        return
    kind = pruner["type"]
    takes_ratio = hasattr(PRUNERS.get(kind), "ratio_subnet")
    ratio_hint = "a width ratio needs RatioPruner" if not takes_ratio else ""

    def check_ratio(key: str, value: Any) -> None:
        if not takes_ratio:
            errors.append(f"{key}: {ratio_hint}; {kind} takes 'sample', 'min', 'max' or masks per space")
        elif not 0 < value <= 1:
            errors.append(f"{key}: a width ratio must be in (0, 1], got {value!r}")

    subnet = pruner.get("subnet", "sample")
    if isinstance(subnet, str):
        if subnet not in _SUBNET_WORDS:
            errors.append(
                f"pruner.subnet: unknown subnet {subnet!r}{did_you_mean(subnet, _SUBNET_WORDS)}; use "
                f"{', '.join(_SUBNET_WORDS)}, a ratio (RatioPruner) or a mapping space -> mask/ratio"
            )
    elif _is_ratio(subnet):
        check_ratio("pruner.subnet", subnet)
    elif isinstance(subnet, dict) and subnet:
        for space, value in subnet.items():
            key = f"pruner.subnet.{space}"
            if _is_ratio(value):
                check_ratio(key, value)
            elif not (isinstance(value, list) and value and all(v in (0, 1) for v in value)):
                errors.append(f"{key}: must be a list of 0/1 (one per unit) or a ratio, got {value!r}")
    else:
        errors.append(
            f"pruner.subnet: must be {', '.join(_SUBNET_WORDS)}, a ratio or a mapping space -> mask/ratio, "
            f"got {subnet!r}"
        )
    seed = pruner.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        errors.append(f"pruner.seed: must be an integer, got {seed!r}")


def validate_config(cfg: Mapping[str, Any], task: str, source: str = "<config>") -> TrainConfig:
    """Check ``cfg`` for ``task`` and return its :class:`TrainConfig`.

    Raises:
        ConfigError: listing every problem with its key path (unknown sections and keys, unknown
            registered types, bad constructor arguments, invalid schedule values, missing files).
    """
    from torchpare.registry import DATASETS

    errors: list[str] = []
    if task not in TASK_NEEDS:
        errors.append(f"task: unknown task {task!r}{did_you_mean(task, TASK_NEEDS)}")
    for k in cfg:
        if k not in SECTIONS:
            errors.append(f"{k}: unknown section{did_you_mean(k, SECTIONS)}; valid: {', '.join(SECTIONS)}")
    for need in TASK_NEEDS.get(task, ()):
        if cfg.get(need) in (None, {}) and not (need == "pruner" and "pruner" in cfg):
            errors.append(f"{need}: required by '{task}' but missing")

    sched = cfg.get("schedule") or {}
    train_cfg = TrainConfig()
    if not isinstance(sched, dict):
        errors.append(f"schedule: must be a mapping, got {type(sched).__name__}")
    else:
        names = TrainConfig.field_names()
        bad_keys = [k for k in sched if k not in names]
        for k in bad_keys:
            errors.append(f"schedule.{k}: unknown setting{did_you_mean(k, names)}")
        train_cfg = TrainConfig(**{k: v for k, v in sched.items() if k in names})
        errors.extend(train_cfg.validate(prefix="schedule."))

    from torchpare.engine.models import with_tokenizer

    data = with_tokenizer(cfg.get("data") or {"type": "digits"}, cfg.get("model"))  # sentences: the model's
    if isinstance(data, dict):
        frac = data.get("label_fraction", 1.0)
        if not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            errors.append(f"data.label_fraction: must be in (0, 1], got {frac!r}")
    _check_registered(data, "data", DATASETS, errors, skip=("label_fraction", "batch_size"))
    if isinstance(data, dict):  # files of the local-file datasets (torchpare.datasets.files)
        for k in ("path", "val_path", "test_path", "tokenizer"):
            if isinstance(data.get(k), str) and not Path(data[k]).exists():
                errors.append(f"data.{k}: no file or folder at '{data[k]}'")
    for key in ("model", "teacher"):
        if cfg.get(key) is not None:
            _check_model_section(cfg[key], key, errors)
    named = {key: _check_named_models(cfg, key, errors) for key in ("teachers", "students")}
    if task == "finetune" and isinstance(cfg.get("model"), dict) and not cfg["model"].get("checkpoint"):
        errors.append("model.checkpoint: 'finetune' needs the weights (or pruned model) to start from")
    if task == "distill":
        _check_algorithm(cfg, errors, named)
    if task == "prune":  # a present but empty section still goes to prune(), which needs a target
        _check_pruner(cfg.get("pruner") or {} if "pruner" in cfg else None, errors)
    if task == "prune" and cfg.get("recover") is not None:
        from torchpare.distill import recover

        _check_function_args(cfg["recover"], "recover", recover, errors, ("pruned", "original"))
    if errors:
        raise ConfigError(source, errors)
    return train_cfg
