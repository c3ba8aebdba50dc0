"""Run one config: train, distill, prune (+ recover), fine-tune or evaluate, and save the results.

This is what the ``torchpare`` commands call. Each run folder gets ``config.yaml`` (the resolved
config), ``metrics.jsonl``, ``checkpoints/`` (``last.pt``, ``best.pt`` and the newest ``step-<N>.pt``),
the model (``model.pt`` or, for a pruned model, the ``model/`` folder of
:func:`torchpare.prune.save_pruned`) and ``results.json`` (test accuracy, parameters, FLOPs, CPU
latency, size), from which ``torchpare report`` draws.

A run folder that already holds files is only reused with ``resume`` (the checkpoint must match the
whole resolved config, see :data:`~torchpare.engine.checkpoint.RESUME_MAY_CHANGE`) or ``overwrite``;
a refused resume writes nothing.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchpare.zoo  # noqa: F401  (registers the reference models that configs name)
from torchpare._utils import atomic_write_bytes
from torchpare.datasets.bundle import DataBundle  # noqa: F401
from torchpare.distill import recover
from torchpare.engine.checkpoint import RESUME_MAY_CHANGE, config_fingerprint
from torchpare.engine.config import ConfigError, algorithm_models, save_config, validate_config
from torchpare.engine.data import build_data
from torchpare.engine.distributed import init_distributed
from torchpare.engine.measure import model_stats
from torchpare.engine.schedule import LOGGING_FIELDS
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.model_io import UNLABELLED, StateDictFileError, load_state_dict_file  # noqa: F401  (UNLABELLED: old import path)
from torchpare.prune import prune

__all__ = [
    "run_task",
    "build_data",
    "build_model",
    "build_algorithm",
    "prune_model",
    "save_model",
]

# Old names of this module, now in torchpare.datasets: FutureWarning on use.
_MOVED = {"DigitsData": "torchpare.datasets.digits", "mask_labels": "torchpare.datasets.bundle"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"torchpare.engine.runner.{name} moved to torchpare.datasets.{name}; the old path goes in "
                      f"the next release.", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_error(where: str, source: str, problem: str) -> ConfigError:
    return ConfigError(source, [f"{where}: {problem}"])


def build_model(cfg: Mapping[str, Any], key: str = "model", source: str = "<config>") -> nn.Module:
    """Build a ``MODELS`` config; ``checkpoint`` loads a state dict file or a pruned-model folder.

    Args:
        cfg: The model section (``type``, the model's arguments, optional ``checkpoint``).
        key: The section's key path, for messages (``model``, ``teacher``, ``teachers.cnn``).
        source: Where the config came from, for messages.

    Returns:
        The model, with the checkpoint's weights loaded.

    Raises:
        ConfigError: the checkpoint is not a state dict (or pruned-model folder), or it does not fit the
            model: the message names the first tensor whose shape differs, with both shapes.

    Example:
        >>> build_model({"type": "DigitsMLP", "hidden": 4}).fc1.out_features
        4
    """
    from torchpare.engine.models import MODEL_SOURCES, build_source_model
    from torchpare.registry import MODELS

    if any(k in cfg for k in MODEL_SOURCES[1:]):  # factory / hf / sentence_transformers (engine.models)
        return build_source_model(cfg, key, source)
    cfg = dict(cfg)
    ckpt = cfg.pop("checkpoint", None)
    model = MODELS.build(cfg)
    if ckpt is None:
        return model
    path = Path(ckpt)
    where = f"{key}.checkpoint"
    if path.is_dir():
        from torchpare.prune.io import load_pruned

        try:
            return load_pruned(path, model)
        except (ValueError, KeyError, OSError) as exc:  # PruningFileError is a ValueError
            raise _load_error(where, source, f"'{path}' is not a pruned model of {cfg.get('type')} "
                              f"({str(exc.args[0] if exc.args else exc).splitlines()[0]})") from None
    try:
        load_state_dict_file(
            model, path, where, unwrap=("state_dict",),
            hint="give a model.pt written by torchpare or torch.save(model.state_dict()); a training "
                 "checkpoint (checkpoints/last.pt) is resumed with --resume instead",
            fix=f"set the {key} section's type and arguments (width, hidden, ...) to those it was trained with")
    except StateDictFileError as exc:
        raise ConfigError(source, [str(exc)]) from None
    return model


def save_model(model: nn.Module, run_dir: Path) -> Path:
    """``run_dir/model/``: a sentence-transformers folder for a ``SentenceTransformer`` (pruned or not, via
    :func:`torchpare.prune.save_pretrained`: it reloads with ``from_pretrained`` or a
    ``sentence_transformers:`` model section), a pruned-model folder for other pruned models (via
    ``save_pruned``); else ``run_dir/model.pt`` (a state dict)."""
    from torchpare.prune.io import pruning_record, save_pruned

    if type(model).__name__ == "SentenceTransformer" and hasattr(model, "save"):
        from torchpare.prune import save_pretrained

        folder = run_dir / "model"
        if folder.exists():
            shutil.rmtree(folder)
        save_pretrained(model, folder)
        return folder
    if pruning_record(model) is not None:
        save_pruned(model, run_dir / "model")
        return run_dir / "model"
    path = run_dir / "model.pt"
    from torchpare._utils import atomic_save

    atomic_save(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return path


def _has_labels(dataset: Any) -> bool:
    """Whether any sample of ``dataset`` has a label (a target ``>= 0``)."""
    from torchpare.engine.trainer import _split_batch, fetch_batch

    n = len(dataset)
    for start in range(0, n, 1024):
        _, y, _ = _split_batch(fetch_batch(dataset, range(start, min(n, start + 1024))))
        if bool((torch.as_tensor(y) >= 0).any()):
            return True
    return False


@torch.no_grad()
def _cosine_to_teacher(model: nn.Module, teacher: nn.Module, dataset: Any, output: Any = None,
                      batch_size: int = 128) -> float:
    """Mean cosine similarity between ``model``'s and ``teacher``'s outputs over ``dataset`` (per sample,
    outputs flattened): the test metric of a run on unlabelled data (a sentences file).

    ``output``: the field or path of the outputs to compare (``"sentence_embedding"``; see
    :func:`torchpare.distill.recover`); default: the logits (:func:`~torchpare.model_io.logits_of`).
    """
    from torchpare.distill.recovery import _field
    from torchpare.engine.trainer import _split_batch, _to_device, fetch_batch
    from torchpare.model_io import call_model, logits_of
    from torchpare.record.base import normalize_data_idx

    path = normalize_data_idx(output)
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in (model, teacher)]
    total, count = 0.0, 0
    try:
        model.eval()
        teacher.eval()
        n = len(dataset)
        for start in range(0, n, batch_size):
            x, _, _ = _split_batch(fetch_batch(dataset, range(start, min(n, start + batch_size))))
            x = _to_device(x, device)
            outs = [call_model(m, x) for m in (model, teacher)]
            s, t = (logits_of(o) if path is None else _field(o, path) for o in outs)
            cos = torch.nn.functional.cosine_similarity(s.float().flatten(1), t.float().flatten(1), dim=-1)
            total += float(cos.sum())
            count += len(cos)
    finally:
        for m, mode in modes:
            m.train(mode)
    return total / max(count, 1)


def _write_results(run_dir: Path, name: str, model: nn.Module, data: DataBundle, extra: dict[str, Any],
                   teacher: nn.Module | None = None, output: Any = None) -> dict:
    """results.json; on an unlabelled test set (sentences) the metric is the cosine to the teacher."""
    labels = None
    if teacher is not None and not _has_labels(data.test):
        metric = _cosine_to_teacher(model, teacher, data.test, output)
        labels = {"accuracy": "cosine to teacher x100"}
        if isinstance(extra.get("baseline"), dict):  # the unpruned model is the teacher itself
            extra["baseline"]["accuracy"] = 1.0
    else:
        scores = evaluate(model, data.test)
        metric = scores["accuracy"]
        if not scores["n"]:
            import warnings

            warnings.warn(f"{name}: the test set has no labelled sample and the run no teacher to compare with, so "
                          f"results.json has no test metric (NaN); give labelled test data (data.test_path).",
                          stacklevel=2)
    entry = {"name": name, "accuracy": metric, **model_stats(model, data.example, data.batch), **extra}
    results: dict[str, Any] = {"models": [entry]}
    if labels:
        results["labels"] = labels
    atomic_write_bytes(run_dir / "results.json", json.dumps(results, indent=2).encode())
    return entry


def build_algorithm(cfg: Mapping[str, Any], model: nn.Module, source: str = "<config>") -> nn.Module:
    """Build the ``algorithm`` section, filling in its model arguments from the config's model sections.

    What is filled in follows the class's constructor (:data:`~torchpare.engine.config.ALGORITHM_MODELS`):
    ``student`` / ``model`` (``SelfDistill``) get ``model``; ``teacher`` the ``teacher`` section;
    ``teachers`` (``MultiTeacherDistill``) one model per entry of the ``teachers`` section; ``students``
    (``OnlineDistill``) ``{"model": model, **students section}``.

    Args:
        cfg: The validated config.
        model: The built ``model`` section (the student that is evaluated and saved).
        source: Where the config came from, for messages.

    Returns:
        The algorithm (an objective for :class:`~torchpare.engine.trainer.Trainer`).

    Raises:
        ConfigError: a teacher checkpoint that is not a state dict or does not fit.
    """
    from torchpare.registry import ALGORITHMS

    algo = dict(cfg["algorithm"])
    for arg, section in algorithm_models(ALGORITHMS.get(algo["type"])).items():
        if section == "model":
            algo[arg] = model
        elif section == "teacher":
            algo[arg] = build_model(cfg["teacher"], "teacher", source)
        elif section == "teachers":
            algo[arg] = {n: build_model(c, f"teachers.{n}", source) for n, c in cfg["teachers"].items()}
        else:
            peers = {n: build_model(c, f"students.{n}", source) for n, c in cfg["students"].items()}
            algo[arg] = {"model": model, **peers}
    return ALGORITHMS.build(algo)


def _subnet_masks(pruner: Any, spec: Any, seed: int) -> tuple[dict[str, Any], str]:
    """The masks of the ``pruner.subnet`` setting, and a description of it."""
    if isinstance(spec, str):
        if spec == "sample":
            return pruner.sample_subnet(torch.Generator().manual_seed(seed)), f"sampled with seed {seed}"
        return (pruner.min_subnet() if spec == "min" else pruner.max_subnet()), spec
    if not isinstance(spec, Mapping):
        return pruner.ratio_subnet(float(spec)), f"ratio {spec}"
    masks: dict[str, Any] = {}
    for space, value in spec.items():
        if isinstance(value, int | float) and space in pruner.groups:
            masks[space] = pruner.ratio_subnet(float(value))[space]
        else:
            masks[space] = value
    return masks, f"{len(masks)} space(s) given"


def prune_model(
    original: nn.Module, pruner_cfg: Mapping[str, Any], example_inputs: Any, source: str = "<config>"
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``original`` as the ``pruner`` section says; ``original`` is left as it is.

    Without ``type`` the section holds the arguments of :func:`torchpare.prune.prune` (a FLOPs or
    parameter target reached by an importance criterion). With ``type`` naming a ``PRUNERS`` class
    (``StructurePruner``, ``RatioPruner``, ``RandomPruner``) the other keys are its constructor
    arguments, plus ``subnet`` (``sample`` (default, with ``seed``, default 0), ``min``, ``max``, a width
    ratio for ``RatioPruner``, or a mapping space id -> 0/1 mask or ratio; unlisted spaces keep every
    unit), and the chosen subnet is deployed as a physically smaller model.

    Returns:
        The pruned model (carrying its pruning record) and a summary: ``{"text": ...}``, plus
        ``"subnet"`` (the exported channel config) for a ``PRUNERS`` class.

    Raises:
        ConfigError: a ``subnet`` naming an unknown space or a mask of the wrong length.
    """
    from torchpare.model_io import takes_mapping

    cfg = dict(pruner_cfg)
    if takes_mapping(original, example_inputs):  # forward(features): the graph calls model(*args)
        example_inputs = (dict(example_inputs),)
    if "type" not in cfg:
        pruned, summary = prune(copy.deepcopy(original), example_inputs, **cfg)
        return pruned, {"text": str(summary)}
    from torchpare.prune import count, deploy_subnet
    from torchpare.registry import PRUNERS

    spec = cfg.pop("subnet", "sample")
    seed = int(cfg.pop("seed", 0))
    pruner = PRUNERS.build({**cfg, "model": copy.deepcopy(original), "example_inputs": example_inputs})
    try:
        masks, how = _subnet_masks(pruner, spec, seed)
        channel_cfg = pruner.export_subnet(masks)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(source, [f"pruner.subnet: {exc.args[0] if exc.args else exc}"]) from None
    finally:
        pruner.remove_hooks()
    pruned = deploy_subnet(copy.deepcopy(original), channel_cfg, example_inputs)
    before, after = count(original, example_inputs), count(pruned, example_inputs)
    text = (f"{cfg['type']} subnet ({how}): params {before['params']:,} -> {after['params']:,}, "
            f"FLOPs {before['flops']:,} -> {after['flops']:,}")
    return pruned, {"text": text, "subnet": channel_cfg}


# What a run writes into its folder; --overwrite removes these (and nothing else) before a new run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "results.json", "model.pt", "model", "subnet.json",
             "report.html", "metrics.csv", "tensorboard")


def _prepare_run_dir(run_dir: Path, resume: bool | str | Path, overwrite: bool, source: str) -> None:
    """Refuse a non-empty run folder unless resuming or overwriting; ``overwrite`` clears :data:`RUN_FILES`."""
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not overwrite:
        raise ConfigError(source, [
            f"output: the run folder '{run_dir}' is not empty (it holds "
            f"{', '.join(sorted(p.name for p in run_dir.iterdir())[:6])}); pass --resume to continue that run, "
            f"--overwrite to replace it, or choose another --output"
        ])
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_task(cfg: Mapping[str, Any], task: str, *, resume: bool | str | Path = False, quiet: bool = False,
             source: str = "<config>", overwrite: bool = False) -> dict[str, Any]:
    """Validate ``cfg`` for ``task``, run it and write the run folder.

    Args:
        cfg: The resolved config (after ``--set`` overrides).
        task: ``train``, ``distill``, ``prune``, ``finetune`` or ``evaluate``.
        resume: ``True``: continue from the newest readable checkpoint of ``<output>/checkpoints``; a
            path: from that checkpoint. The checkpoint must match the whole resolved config except
            :data:`~torchpare.engine.checkpoint.RESUME_MAY_CHANGE`; a refused resume writes nothing.
        quiet: No progress bar.
        source: Where the config came from (for error messages).
        overwrite: Start a new run in a non-empty run folder (its previous run files are deleted).

    Returns:
        The results entry (test accuracy, params, FLOPs, latency, size, model path).

    Raises:
        ConfigError: every config problem, or a non-empty run folder without ``resume``/``overwrite``,
            before anything is written.
        CheckpointError: ``resume`` with a missing/corrupt/mismatched checkpoint (nothing is written).
    """
    if "stages" in cfg:  # a multi-stage recipe (torchpare.engine.stages)
        from torchpare.engine.stages import run_stages

        return run_stages(cfg, task, resume=bool(resume), quiet=quiet, source=source, overwrite=overwrite)
    train_cfg = validate_config(cfg, task, source)
    train_cfg.quiet = train_cfg.quiet or quiet
    run_dir = Path(cfg.get("output") or f"runs/{task}")
    info = init_distributed(train_cfg.device)
    trains = task != "evaluate" and not (task == "prune" and "schedule" not in cfg)
    resume = resume if trains else False
    if info.is_main:
        _prepare_run_dir(run_dir, resume, overwrite, source)
    resolved = {**cfg, "task": task} if "task" not in cfg else dict(cfg)
    if trains:  # config.yaml holds the schedule with its defaults filled in
        resolved["schedule"] = train_cfg.to_dict()
    torch.manual_seed(train_cfg.seed)
    from torchpare.engine.models import with_tokenizer

    data = build_data(with_tokenizer(cfg.get("data"), cfg.get("model")), source=source)
    model = build_model(cfg["model"], "model", source)
    extra: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    objective: nn.Module = model
    if task == "distill":
        objective = build_algorithm(cfg, model, source)
    elif task == "prune":
        original = model
        model, summary = prune_model(original, cfg.get("pruner") or {}, data.example, source)
        extra["prune_summary"] = summary["text"]
        objective = model
        if cfg.get("recover") is not None:
            objective = recover(model, original, **cfg["recover"])
    trainer = None
    if trains:
        trainer = Trainer(objective, data.train, val_data=data.val, config=train_cfg, run_dir=run_dir,
                          eval_model=model, name=task, fingerprint=config_fingerprint(resolved, RESUME_MAY_CHANGE + LOGGING_FIELDS))
        if resume:
            trainer.resume_checkpoint(resume)  # refuses before anything is written
    if info.is_main:  # from here on the run folder is written
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(resolved, run_dir / "config.yaml")
        if task == "prune" and "subnet" in summary:
            atomic_write_bytes(run_dir / "subnet.json", json.dumps(summary["subnet"], indent=2).encode())
    if trainer is not None:
        trainer.fit(resume=resume)
    if not info.is_main:
        return {}
    extra["model_path"] = str(save_model(model, run_dir))
    if task == "prune":  # the unpruned model, for the report's baseline and ratios
        extra["baseline"] = {"name": f"{cfg.get('name', task)} (unpruned)",
                             "accuracy": evaluate(original, data.test)["accuracy"],
                             **model_stats(original, data.example, data.batch)}
    # on unlabelled data (sentences) the test metric is the agreement with the teacher
    teacher = original if task == "prune" else getattr(objective, "teacher", None)
    return _write_results(run_dir, str(cfg.get("name", task)), model, data, extra,
                          teacher if isinstance(teacher, nn.Module) else None, getattr(objective, "output", None))
