"""The digits demo: teacher, students from scratch, KD and a feature method, pruning + recovery.

On scikit-learn's ``load_digits`` (fixed 60/20/20 split) it trains a teacher CNN, the small students
from scratch, distils them from the teacher where distillation helps (10% of the labels plus every
image unlabelled), prunes the teacher to about 50% of its FLOPs with the dependency graph, re-estimates
its BatchNorm statistics (``recalibrate_bn``) and recovers it by distillation from the unpruned teacher
through adapters, and trains one slimmable supernet of the teacher's architecture (AutoSlim) whose
searched subnets at 50% and 25% of its FLOPs are deployed without further training. It writes ``report.html``, PNGs and ``results.json`` into the output folder and prints
the results table last.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from torchpare._utils import atomic_write_bytes
from torchpare.datasets import DigitsData, load_digits_split
from torchpare.distill import recover
from torchpare.engine.cache import CachedObjective, TeacherCache
from torchpare.engine.measure import compare_latency_ms, count_params_flops, size_on_disk
from torchpare.engine.report import build_report, format_table
from torchpare.engine.rng import seed_everything
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.prune import prune

__all__ = ["run_demo", "kd_distiller", "at_kd_distiller", "EPOCHS"]

# (full, fast) epochs per stage; the full demo stays under 3 minutes on 2 CPU cores.
EPOCHS = {"teacher": (12, 1), "student": (60, 1), "kd": (60, 1), "cnn": (15, 1), "recover": (10, 1), "slim": (12, 1)}
LABEL_FRACTION = 0.1


def kd_distiller(student_logits: str = "fc2", teacher_logits: str = "fc", tau: float = 4.0) -> dict[str, Any]:
    """ConfigurableDistiller config for logit KD (KL divergence at temperature ``tau``)."""
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": student_logits}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": teacher_logits}},
        "distill_losses": {"kd": {"type": "KLDivergence", "tau": tau}},
        "loss_forward_mappings": {"kd": {"preds_S": {"from_student": True, "recorder": "logits"},
                                         "preds_T": {"from_student": False, "recorder": "logits"}}},
    }


def at_kd_distiller(layer: str = "layer3", weight: float = 100.0) -> dict[str, Any]:
    """KD plus attention transfer (a feature method) between ``layer`` of student and teacher CNNs."""
    cfg = kd_distiller("fc", "fc")
    cfg["student_recorders"]["feat"] = {"type": "ModuleOutputs", "source": layer}
    cfg["teacher_recorders"]["feat"] = {"type": "ModuleOutputs", "source": layer}
    cfg["distill_losses"]["at"] = {"type": "ATLoss", "loss_weight": weight}
    cfg["loss_forward_mappings"]["at"] = {"s_feature": {"from_student": True, "recorder": "feat"},
                                          "t_feature": {"from_student": False, "recorder": "feat"}}
    return cfg


class _Demo:
    def __init__(self, out: Path, fast: bool, quiet: bool) -> None:
        self.out, self.fast, self.quiet = out, fast, quiet
        split = load_digits_split(seed=0)
        self.full = DigitsData(split, 1.0)
        self.scarce = DigitsData(split, LABEL_FRACTION)
        self.models: list[dict[str, Any]] = []
        self.nets: dict[str, nn.Module] = {}  # eval copies, for side-by-side latency at the end
        self.notes: list[str] = []

    def epochs(self, key: str) -> int:
        return EPOCHS[key][1 if self.fast else 0]

    def train(self, name: str, objective: nn.Module, model: nn.Module, data: DigitsData, epochs: int,
              lr: float) -> nn.Module:
        cfg = TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=0, device="cpu", quiet=self.quiet)
        t0 = time.perf_counter()
        Trainer(objective, data.train, val_data=data.val, config=cfg, run_dir=self.out / name, eval_model=model,
                name=name).fit()
        self.record(name, model, train_s=time.perf_counter() - t0)
        return model

    def record(self, name: str, model: nn.Module, **extra: Any) -> None:
        d = self.full
        entry = {"name": name, "accuracy": evaluate(model, d.test)["accuracy"],
                 **count_params_flops(model, d.example), "size_bytes": size_on_disk(model), **extra}
        self.models.append(entry)
        self.nets[name] = copy.deepcopy(model).eval()
        if not self.quiet:
            print(f"  {name}: test accuracy {100 * entry['accuracy']:.2f}%")

    def save(self, total_s: float) -> Path:
        latency = compare_latency_ms(self.nets, self.full.batch, repeats=3 if self.fast else 25)
        for entry in self.models:
            entry["latency_ms"] = latency[entry["name"]]
        data = {"title": "torchpare demo: distillation and pruning on scikit-learn digits",
                "models": self.models, "notes": [*self.notes, f"total demo time {total_s:.0f} s"]}
        atomic_write_bytes(self.out / "results.json", json.dumps(data, indent=2).encode())
        return build_report(self.out)


def _algo(student: nn.Module, teacher: nn.Module, distiller: dict[str, Any], cache_dir: Path | None = None,
          num_samples: int = 0) -> nn.Module:
    """SingleTeacherDistill; with ``cache_dir`` the frozen teacher runs once per sample (TeacherCache)."""
    from torchpare.registry import ALGORITHMS

    def build(t: nn.Module) -> nn.Module:
        return ALGORITHMS.build({"type": "SingleTeacherDistill", "student": student, "teacher": t,
                                 "distiller": distiller})

    if cache_dir is None:
        return build(teacher)
    sources = tuple(dict.fromkeys(r["source"] for r in distiller["teacher_recorders"].values()))
    cache = TeacherCache(teacher, cache_dir, num_samples=num_samples, sources=sources)
    return CachedObjective(build(cache.as_module()), cache)


def run_demo(output: str | Path = "runs/demo", fast: bool = False, quiet: bool = False) -> list[dict[str, Any]]:
    """Run every stage, write ``report.html``/PNGs/``results.json`` into ``output``, print the table.

    Args:
        output: Run folder.
        fast: One epoch per stage (for tests); the numbers are then meaningless.
        quiet: No progress bars or per-stage lines (the final table is still printed).

    Returns:
        The results entries (name, accuracy, params, flops, latency_ms, size_bytes, ...).
    """
    from torchpare.zoo import DigitsCNN, DigitsMLP, DigitsSmallCNN

    t_start = time.perf_counter()
    demo = _Demo(Path(output), fast, quiet)
    shutil.rmtree(demo.out / "teacher_cache", ignore_errors=True)  # a previous run's teacher may differ
    pct = f"{LABEL_FRACTION:.0%}"
    seed_everything(0)
    t = DigitsCNN(width=20)
    teacher = demo.train("teacher_cnn", t, t, demo.full, demo.epochs("teacher"), 3e-3)
    teacher.eval()

    for name, data in (("mlp_scratch_all_labels", demo.full), (f"mlp_scratch_{pct}_labels", demo.scarce)):
        seed_everything(1)
        s = DigitsMLP(hidden=16)
        demo.train(name, s, s, data, demo.epochs("student"), 1e-2)
    seed_everything(1)
    s = DigitsMLP(hidden=16)
    n = len(demo.full.train)
    kd = _algo(s, teacher, kd_distiller(), demo.out / "teacher_cache" / "kd", n)
    demo.train(f"mlp_kd_{pct}_labels", kd, s, demo.scarce, demo.epochs("kd"), 1e-2)

    seed_everything(2)
    c = DigitsSmallCNN(width=8)
    demo.train(f"smallcnn_scratch_{pct}_labels", c, c, demo.scarce, demo.epochs("cnn"), 3e-3)
    seed_everything(2)
    c = DigitsSmallCNN(width=8)
    at = _algo(c, teacher, at_kd_distiller(), demo.out / "teacher_cache" / "at_kd", n)
    demo.train(f"smallcnn_at+kd_{pct}_labels", at, c, demo.scarce, demo.epochs("cnn"), 3e-3)
    demo.notes.append(
        f"Students marked '{pct}_labels' see {pct} of the training labels; the distilled ones also see every "
        f"training image unlabelled (the teacher labels them). On all labels, logit KD gives a small MLP no "
        f"gain on digits (a hand-written KD loop shows the same), so the demo shows distillation where it helps. The frozen "
        f"teacher's outputs are cached on disk after the first epoch (TeacherCache). CPU latency: every model "
        f"measured side by side at the end (interleaved rounds, median), a batch of 64 test images."
    )
    _prune_stage(demo, teacher)
    _slim_stage(demo)
    path = demo.save(time.perf_counter() - t_start)
    if not quiet:
        print(f"report: {path}")
    print(format_table(demo.models))
    return demo.models


def _prune_stage(demo: _Demo, teacher: nn.Module) -> None:
    seed_everything(3)
    try:
        from torchpare.prune.calibrate import recalibrate_bn

        pruned, summary = prune(copy.deepcopy(teacher), demo.full.example, importance="l1", target_flops_ratio=0.5)
    except ImportError as exc:  # a part of torchpare.prune missing from this installation
        demo.notes.append(f"pruning stage skipped: {exc}")
        return
    # Stale BatchNorm statistics put the freshly pruned net near chance; one pass over the training
    # images (labels unused) re-estimates them, no weight changes.
    stale = evaluate(pruned, demo.full.test)["accuracy"]
    recalibrate_bn(pruned, demo.full.split.x_train.split(64))
    demo.record("teacher_pruned_50%_flops_bn_recalibrated", pruned, accuracy_before_recalibration=stale)
    fb, fa = getattr(summary, "flops_before", None), getattr(summary, "flops_after", None)
    demo.notes.append(
        f"pruning: the teacher pruned with the dependency graph (L1 importance) from {fb:,} to {fa:,} FLOPs "
        f"({fa / fb:.0%}); test accuracy {stale:.1%} right after pruning, {demo.models[-1]['accuracy']:.1%} "
        f"once its BatchNorm statistics are re-estimated on the training images (no training), then "
        f"recovered by distillation from the unpruned teacher through adapters."
        if fb and fa else f"pruning: {summary}"
    )
    recovered = copy.deepcopy(pruned)
    demo.train("teacher_pruned_recovered_by_distillation", recover(recovered, teacher), recovered, demo.full,
               demo.epochs("recover"), 1e-3)


def _slim_stage(demo: _Demo, targets: tuple[float, ...] = (0.5, 0.25)) -> None:
    """One AutoSlim supernet of the teacher's architecture; the greedy search's subnets at ``targets`` of
    its FLOPs, deployed (BatchNorm statistics re-estimated) and evaluated without fine-tuning."""
    try:
        from torchpare.slim import AutoSlim, greedy_search
    except ImportError as exc:  # a part of torchpare missing from this installation
        demo.notes.append(f"slimmable stage skipped: {exc}")
        return
    from torchpare.zoo import DigitsCNN

    seed_everything(4)
    t0 = time.perf_counter()
    x = demo.full.split.x_train
    algo = AutoSlim(DigitsCNN(width=20), {"ratios": [r / 8 for r in range(2, 9)], "divisor": 2},
                    example_inputs=demo.full.example, num_random_samples=2, bn="recalibrate", seed=0)
    cfg = TrainConfig(epochs=demo.epochs("slim"), batch_size=64, lr=1e-2, seed=0, device="cpu", quiet=demo.quiet)
    Trainer(algo, demo.full.train, val_data=demo.full.val, config=cfg, run_dir=demo.out / "slim_supernet",
            eval_model=algo.student, name="slim_supernet").fit()
    demo.record("slim_supernet_full_width", algo.deploy(1.0), train_s=time.perf_counter() - t0)
    supernet_entry = demo.models[-1]
    calib = [(x[i:i + 64],) for i in range(0, len(x), 64)][:8]
    result = greedy_search(algo, demo.full.val, targets=targets, calib_data=calib, score="loss",
                           max_channel_bins=4 if demo.fast else 8)
    for target, cfg in result.channel_cfgs.items():
        demo.record(f"slim_searched_{target:.0%}_flops", algo.deploy(cfg, calib), searched_ratio=result.ratios[target])
    demo.notes.append(
        f"slimmable: one DigitsCNN(width=20) supernet trained {demo.epochs('slim')} epochs with the sandwich rule "
        f"(AutoSlim: max + min + 2 random widths per step, in-place distillation), then one greedy search on the "
        f"validation set for {', '.join(f'{t:.0%}' for t in targets)} of its FLOPs; each searched subnet is deployed "
        f"as a smaller plain model with re-estimated BatchNorm statistics and no further training "
        f"({time.perf_counter() - t0:.0f} s for the stage; full width {100 * supernet_entry['accuracy']:.1f}%)."
    )
