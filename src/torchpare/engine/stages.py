"""Multi-stage recipes: one config whose ``stages:`` run one after another on the same model.

Each entry of ``stages`` is merged (recursively) into the rest of the config, so a stage changes only
what differs (its ``algorithm``, its ``schedule``, ...). Two keys belong to the stage itself:

* ``name``: names the stage's folder ``<output>/stages/<i>-<name>`` (its ``metrics.jsonl``,
  ``checkpoints/`` and, once done, ``objective.pt``);
* ``freeze``: module paths inside the stage's objective (``distiller.connectors.paraphraser``) whose
  parameters do not train and which stay in eval mode.

The model (the ``model`` section, the student) is one object across stages; every other weight of a
stage's objective whose name and shape match the previous stage's (a connector trained in a pre-training
stage) is carried over. The factor-transfer recipe (``configs/digits_ft_stages.yaml``): stage 1 trains
the teacher-side paraphraser alone (both loss arguments ``from_student: false``, the student frozen),
stage 2 distils through the translator against the frozen paraphraser.

``--resume`` loads the stages that have an ``objective.pt`` (``{"state", "fingerprint"}``; a stage
whose merged config changed is refused) and resumes the first unfinished one from its checkpoints.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchpare._utils import atomic_save
from torchpare.engine.checkpoint import CheckpointMismatchError, _diff_fingerprints, config_fingerprint
from torchpare.engine.config import ConfigError, save_config, validate_config
from torchpare.engine.distributed import init_distributed
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer

__all__ = ["STAGE_KEYS", "merge_config", "stage_configs", "run_stages", "freeze_modules", "carry_state"]

STAGE_KEYS = ("name", "freeze")


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively (mappings merge, anything else replaces).

    Example:
        >>> merge_config({"schedule": {"epochs": 3, "lr": 0.1}}, {"schedule": {"epochs": 1}})
        {'schedule': {'epochs': 1, 'lr': 0.1}}
    """
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_config(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def stage_configs(
    cfg: Mapping[str, Any], task: str, source: str = "<config>"
) -> list[tuple[str, list[str], dict[str, Any], TrainConfig]]:
    """Every stage as ``(name, freeze, merged config, TrainConfig)``, all validated at once.

    Raises:
        ConfigError: ``stages`` is not a non-empty list of mappings, or a merged stage config is invalid
            (each problem prefixed with ``stages[i]``).
    """
    stages = cfg.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, Mapping) for s in stages):
        raise ConfigError(source, ["stages: must be a non-empty list of mappings (section overrides plus "
                                   "'name' and 'freeze')"])
    base = {k: v for k, v in cfg.items() if k != "stages"}
    out, errors = [], []
    for i, stage in enumerate(stages):
        name = str(stage.get("name", f"stage{i}"))
        freeze = stage.get("freeze") or []
        if not isinstance(freeze, list) or not all(isinstance(f, str) for f in freeze):
            errors.append(f"stages[{i}].freeze: must be a list of module paths, got {freeze!r}")
            freeze = []
        merged = merge_config(base, {k: v for k, v in stage.items() if k not in STAGE_KEYS})
        try:
            out.append((name, list(freeze), merged, validate_config(merged, task, source)))
        except ConfigError as exc:
            errors.extend(f"stages[{i}] ({name}): {e}" for e in exc.errors)
    if errors:
        raise ConfigError(source, errors)
    return out


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_modules(objective: nn.Module, paths: list[str], where: str = "freeze") -> None:
    """Stop ``paths``' parameters from training and keep those modules in eval mode.

    Raises:
        ConfigError: a path is not a module of ``objective`` (the message lists its top-level children).
    """
    for path in paths:
        try:
            module = objective.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in objective.named_modules() if n and n.count(".") < 3]
            raise ConfigError("<config>", [f"{where}: {path!r} is not a module of the objective; "
                                           f"modules: {', '.join(names[:20])}"]) from None
        module.requires_grad_(False)
        module.train = types.MethodType(_always_eval, module)  # type: ignore[method-assign]
        module.eval()


def carry_state(objective: nn.Module, previous: Mapping[str, torch.Tensor]) -> list[str]:
    """Load the entries of ``previous`` whose name and shape match ``objective``'s; returns their names."""
    own = objective.state_dict()
    carried = {k: v for k, v in previous.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    objective.load_state_dict(carried, strict=False)
    return sorted(carried)


def run_stages(
    cfg: Mapping[str, Any],
    task: str,
    *,
    resume: bool = False,
    quiet: bool = False,
    source: str = "<config>",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the ``stages`` of ``cfg`` in order on one model; the last stage's model is saved and measured.

    Returns:
        The results entry of the final model (as :func:`~torchpare.engine.runner.run_task`).

    Raises:
        ConfigError: any stage's config is invalid (all reported before anything runs), a ``freeze``
            path is unknown, or the run folder is not empty without ``resume``/``overwrite``.
    """
    from torchpare.engine import runner

    stages = stage_configs(cfg, task, source)
    run_dir = Path(cfg.get("output") or f"runs/{task}")
    info = init_distributed(stages[0][3].device)
    if info.is_main:
        runner._prepare_run_dir(run_dir, resume, overwrite, source)
    torch.manual_seed(stages[0][3].seed)
    model = runner.build_model(stages[0][2]["model"], "model", source)
    trains = {n: p.requires_grad for n, p in model.named_parameters()}
    previous: dict[str, torch.Tensor] | None = None
    data = None
    for i, (name, freeze, stage_cfg, train_cfg) in enumerate(stages):
        train_cfg.quiet = train_cfg.quiet or quiet
        for n, p in model.named_parameters():  # a stage that froze the student does not freeze the next
            p.requires_grad_(trains[n])
        data = runner.build_data(stage_cfg.get("data"))
        objective = runner.build_algorithm(stage_cfg, model, source) if task == "distill" else model
        if previous is not None:
            carry_state(objective, previous)
        freeze_modules(objective, freeze, f"stages[{i}].freeze")
        stage_dir = run_dir / "stages" / f"{i}-{name}"
        done = stage_dir / "objective.pt"
        fingerprint = {**config_fingerprint(stage_cfg), "stage": i}
        if resume and done.is_file():
            saved = torch.load(done, map_location="cpu", weights_only=True)
            problems = _diff_fingerprints({"settings": saved.get("fingerprint", {})}, {"settings": fingerprint})
            if problems:
                raise CheckpointMismatchError(
                    f"resume: finished stage '{done}' does not match this config: {'; '.join(problems)}. "
                    f"Use the same config, or start a new run folder (--overwrite)."
                )
            objective.load_state_dict(saved["state"])
        else:
            trainer = Trainer(objective, data.train, val_data=data.val, config=train_cfg, run_dir=stage_dir,
                              eval_model=model, name=f"{task}:{name}",
                              fingerprint=fingerprint)
            go_on = bool(resume) and bool(trainer.checkpoint_files() and trainer.checkpoint_files().candidates())
            if info.is_main and i == 0 and not resume:
                run_dir.mkdir(parents=True, exist_ok=True)
                save_config({**cfg, "task": task} if "task" not in cfg else dict(cfg), run_dir / "config.yaml")
            trainer.fit(resume=go_on)
            if info.is_main:
                payload = {"state": objective.state_dict(), "fingerprint": fingerprint}
                atomic_save(done, lambda tmp, payload=payload: torch.save(payload, tmp))
        previous = objective.state_dict()
    if not info.is_main:
        return {}
    if resume:
        save_config({**cfg, "task": task} if "task" not in cfg else dict(cfg), run_dir / "config.yaml")
    entry = {"model_path": str(runner.save_model(model, run_dir)), "stages": [s[0] for s in stages]}
    return runner._write_results(run_dir, str(cfg.get("name", task)), model, data, entry)
