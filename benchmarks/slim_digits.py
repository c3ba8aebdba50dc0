"""AutoSlim on digits: searched subnets of one supernet vs prune() + fine-tune vs uniform widths.

Architecture: ``DigitsCNN(width=16)`` (the teacher's FLOPs are the full width's). Per seed (the split,
the initialisation and the batch order change with it):

* **supernet**: :class:`~torchpare.slim.AutoSlim` (sandwich rule, ``num_random_samples=2``, in-place
  KL distillation, ``bn="recalibrate"``: independent widths per layer in ratios 0.375..1 by 1/8
  (``--min-ratio``), channels in multiples of 2) trained ``EPOCHS`` epochs; then one greedy search on
  the validation set (score: the distillation loss against the max subnet by default, ``--score``)
  records the subnets at 75/50/25% of the FLOPs (``refine``: the budget left under each target spent);
  each is deployed (BatchNorm statistics re-estimated on 8 training batches) and evaluated on the test
  set, without fine-tuning.
* **prune + fine-tune**: the full-width model trained ``TEACHER_EPOCHS`` epochs, ``prune()``d to the
  same FLOPs ratio (defaults: L1, global ranking, automatic ``round_to``; and again with
  ``round_to=1``, exact channel counts), fine-tuned ``EPOCHS - TEACHER_EPOCHS`` epochs: the same number
  of optimiser steps as the supernet in all. The verdict compares with the better of the two.
* **uniform**: the widest uniform width of the same supernet whose FLOPs fit the target (statistics
  re-estimated the same way).

Also measured: the supernet's training step time over a plain step (same model, batch 64, medians
of interleaved runs; target <= 2 + num_random_samples).

Run (about 5 minutes on one core):
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/slim_digits.py
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.objective import SupervisedObjective
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, evaluate
from torchpare.prune import count, prune, recalibrate_bn
from torchpare.slim import AutoSlim, greedy_search
from torchpare.slim.search import _cost
from torchpare.zoo import DigitsCNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _distill_report import write_section  # noqa: E402

WIDTH = 16
EPOCHS = 20
TEACHER_EPOCHS = 10
TARGETS = (0.75, 0.5, 0.25)
RATIOS = tuple(i / 8 for i in range(3, 9))  # 0.375..1: the smallest target (25% FLOPs) needs about 0.5
NUM_RANDOM = 2
DIVISOR = 2
CALIB_BATCHES = 8
LR, FT_LR, BATCH = 0.01, 0.002, 64
SUPERNET_LR = LR
X = torch.zeros(1, 1, 8, 8)


def _cfg(epochs: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=BATCH, lr=lr, seed=seed, quiet=True)


def _supernet(seed: int) -> AutoSlim:
    torch.manual_seed(seed)
    return AutoSlim(DigitsCNN(width=WIDTH), {"ratios": list(RATIOS), "divisor": DIVISOR}, example_inputs=X,
                    num_random_samples=NUM_RANDOM, bn="recalibrate", seed=seed)


def _uniform_flops(algo: AutoSlim) -> dict[float, int]:
    """Deployed FLOPs of every uniform width ratio (multiples of 1/64 from 1/4)."""
    return {r: _cost(algo.student, algo.pruner, algo.pruner.ratio_subnet(r), "flops")
            for r in (i / 64 for i in range(16, 65))}


def _subsample(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``fraction`` of the training split, stratified per class (the same images for all three
    methods), and of the images left out."""
    if fraction >= 1:
        return torch.arange(len(y)), torch.arange(0)
    gen = torch.Generator().manual_seed(1000 + seed)
    keep = []
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:max(1, round(fraction * len(idx)))]])
    keep_idx = torch.cat(keep).sort().values
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[keep_idx] = False
    return keep_idx, rest.nonzero().flatten()


def run_seed(seed: int, epochs: int, teacher_epochs: int, score: str = "accuracy",
             finetune_epochs: int = 0, train_fraction: float = 1.0,
             search_extra: bool = False) -> dict[str, dict[float, float]]:
    split = load_digits_split(seed)
    keep, rest = _subsample(split.x_train, split.y_train, train_fraction, seed)
    x_rest, y_rest = split.x_train[rest], split.y_train[rest]
    split = dataclasses.replace(split, x_train=split.x_train[keep], y_train=split.y_train[keep])
    train = TensorDataset(split.x_train, split.y_train)
    val = TensorDataset(split.x_val, split.y_val)
    if search_extra:  # the search (only) also sees the training images --train-fraction left out
        val = TensorDataset(torch.cat([split.x_val, x_rest]), torch.cat([split.y_val, y_rest]))
    test = TensorDataset(split.x_test, split.y_test)
    calib = [(split.x_train[i:i + BATCH],) for i in range(0, min(len(split.x_train), CALIB_BATCHES * BATCH), BATCH)]
    out: dict[str, dict[float, float]] = {"searched": {}, "pruned": {}, "pruned1": {}, "uniform": {}, "flops": {},
                                          "uflops": {}, "uratio": {}, "diff": {}}

    algo = _supernet(seed)
    Trainer(algo, train, config=_cfg(epochs - finetune_epochs, SUPERNET_LR, seed)).fit()
    full = count(algo.deploy(1.0), X)["flops"]
    out["supernet"] = {1.0: evaluate(algo.student, test)["accuracy"]}
    result = greedy_search(algo, val, targets=TARGETS, calib_data=calib, max_channel_bins=8, score=score)
    uniform = _uniform_flops(algo)
    for t, cfg in result.channel_cfgs.items():
        small = algo.deploy(cfg, calib).eval()
        with algo.subnet(cfg, calib) as net, torch.no_grad():
            out["diff"][t] = float((net.eval()(split.x_test) - small(split.x_test)).abs().max())
        out["flops"][t] = count(small, X)["flops"] / full
        r = max(ratio for ratio, flops in uniform.items() if flops <= t * full)
        out["uflops"][t], out["uratio"][t] = uniform[r] / full, r
        narrow = algo.deploy(r, calib)
        if finetune_epochs:  # both fine-tuned alike: supernet + fine-tuning = EPOCHS per delivered model
            for net in (small, narrow):
                Trainer(net, train, config=_cfg(finetune_epochs, FT_LR, seed)).fit()
        out["searched"][t] = evaluate(small, test)["accuracy"]
        out["uniform"][t] = evaluate(narrow, test)["accuracy"]

    torch.manual_seed(seed)
    teacher = DigitsCNN(width=WIDTH)
    Trainer(teacher, train, config=_cfg(teacher_epochs, LR, seed)).fit()
    out["teacher"] = {1.0: evaluate(teacher, test)["accuracy"]}
    for t in TARGETS:
        for key, kwargs in (("pruned", {}), ("pruned1", {"round_to": 1})):  # defaults; exact channel counts
            pruned, _ = prune(copy.deepcopy(teacher), X, target_flops_ratio=t, **kwargs)
            recalibrate_bn(pruned, calib)
            Trainer(pruned, train, config=_cfg(epochs - teacher_epochs, FT_LR, seed)).fit()
            out[key][t] = evaluate(pruned, test)["accuracy"]
    return out


def step_cost(repeats: int = 40) -> tuple[float, float]:
    """Median CPU seconds (``process_time``, one thread: robust to other processes' load) of one
    optimiser step: plain training vs the AutoSlim sandwich, interleaved."""
    torch.manual_seed(0)
    x, y = torch.rand(BATCH, 1, 8, 8), torch.randint(0, 10, (BATCH,))
    plain = SupervisedObjective(DigitsCNN(width=WIDTH))
    algo = _supernet(0)
    runs: dict[str, list[float]] = {"plain": [], "slim": []}
    objectives = {"plain": plain, "slim": algo}
    opts = {k: torch.optim.AdamW(o.parameters(), lr=1e-3) for k, o in objectives.items()}
    for i in range(repeats + 3):
        for name, obj in objectives.items():
            t0 = time.process_time()
            losses = obj.loss(x, y)
            opts[name].zero_grad()
            obj.total_loss(losses).backward()
            opts[name].step()
            if i >= 3:
                runs[name].append(time.process_time() - t0)
    return statistics.median(runs["plain"]), statistics.median(runs["slim"])


def _fmt(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="train the supernet EPOCHS - this, then fine-tune each searched/uniform subnet this long")
    parser.add_argument("--width", type=int, default=WIDTH, help="DigitsCNN width")
    parser.add_argument("--score", default="distill", choices=("accuracy", "loss", "distill"),
                        help="the search's held-out score")
    parser.add_argument("--min-ratio", type=float, default=RATIOS[0],
                        help="the supernet's smallest width ratio (ratios from it to 1 by 1/8)")
    parser.add_argument("--supernet-lr", type=float, default=LR)
    parser.add_argument("--divisor", type=int, default=DIVISOR)
    parser.add_argument("--calib-batches", type=int, default=CALIB_BATCHES)
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train every method on this fraction of the training split (stratified; val/test unchanged)")
    parser.add_argument("--search-extra", action="store_true",
                        help="diagnostic: the search also scores on the training images --train-fraction left "
                             "out (unlabelled with --score distill); the other methods do not see them")
    parser.add_argument("--write", default=None, help="write the section into this markdown file")
    args = parser.parse_args()
    if args.search_extra and args.train_fraction >= 1:
        parser.error("--search-extra needs --train-fraction < 1 (it searches on the training images left out)")
    torch.set_num_threads(1)
    globals()["WIDTH"] = args.width
    globals()["RATIOS"] = tuple(r for r in (i / 8 for i in range(1, 9)) if r >= args.min_ratio - 1e-9)
    globals()["SUPERNET_LR"] = args.supernet_lr
    globals()["DIVISOR"] = args.divisor
    globals()["CALIB_BATCHES"] = args.calib_batches
    t0 = time.time()
    runs = [run_seed(s, args.epochs, args.teacher_epochs, args.score, args.finetune_epochs, args.train_fraction,
                     args.search_extra)
            for s in args.seeds]
    plain, slim = step_cost()
    rows = ["| FLOPs target | searched FLOPs | searched subnet | prune() + fine-tune | prune(round_to=1) + fine-tune | "
            "uniform width | uniform ratio, FLOPs | searched - best pruned | searched - uniform | max abs diff deployed vs masked |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for t in TARGETS:
        s = [r["searched"][t] for r in runs]
        p = [r["pruned"][t] for r in runs]
        p1 = [r["pruned1"][t] for r in runs]
        u = [r["uniform"][t] for r in runs]
        gap = 100 * (statistics.mean(s) - max(statistics.mean(p), statistics.mean(p1)))
        ugap = 100 * (statistics.mean(s) - statistics.mean(u))
        rows.append(
            f"| {round(100 * t)}% | {statistics.mean(r['flops'][t] for r in runs):.3f} | {_fmt(s)} | {_fmt(p)} | "
            f"{_fmt(p1)} | {_fmt(u)} | {statistics.mean(r['uratio'][t] for r in runs):.3f}, "
            f"{statistics.mean(r['uflops'][t] for r in runs):.3f} | {gap:+.1f} | {ugap:+.1f} | {max(r['diff'][t] for r in runs):.1e} |"
        )
        verdicts.append(
            f"{round(100 * t)}%: within 0.5 of the better prune(): {'yes' if gap >= -0.5 else 'NO'}; "
            f"beats uniform: {'yes' if ugap > 0 else 'NO'}"
        )
    sup = [r["supernet"][1.0] for r in runs]
    teach = [r["teacher"][1.0] for r in runs]
    per_seed = "; ".join(
        f"seed {seed}: " + ", ".join(
            f"{round(100 * t)}% searched {100 * r['searched'][t]:.1f} / uniform {100 * r['uniform'][t]:.1f}"
            for t in TARGETS)
        for seed, r in zip(args.seeds, runs))
    frac = "" if args.train_fraction >= 1 else f", {args.train_fraction:g} of the training labels"
    ratio = slim / plain
    body = "\n".join([
        f"### AutoSlim on digits: width {args.width}, search score {args.score}, "
        f"{args.finetune_epochs} fine-tuning epochs per subnet{frac}",
        "",
        f"`DigitsCNN(width={args.width})`, seeds {args.seeds}, test accuracy % (mean ± std). Supernet: "
        f"{args.epochs - args.finetune_epochs} epochs of the sandwich rule (max + min + {NUM_RANDOM} random, in-place KL), "
        f"max subnet {_fmt(sup)}, ratios {RATIOS[0]:g}..1 by 1/8, divisor {DIVISOR}, lr {SUPERNET_LR:g}. "
        f"prune() (defaults, and with round_to=1: exact channel counts): {args.teacher_epochs} epochs of plain training + "
        f"{args.epochs - args.teacher_epochs} epochs of fine-tuning (the same optimiser steps in all); the full-width "
        f"model after its {args.teacher_epochs} epochs: {_fmt(teach)}. "
        + (f"Training set: {args.train_fraction:g} of the training split (stratified per class, the same images for "
           "all methods; validation and test sets unchanged). " if frac else "")
        + ("Diagnostic, not a like-for-like comparison: the search scores candidates on the validation set plus the "
           "training images left out (" + ("unlabelled: the distill score reads no labels" if args.score == "distill"
                                            else "with their labels") + "); prune() and uniform do not see them. "
           if args.search_extra else "")
        + f"Search score: {args.score}. " + (
            f"Supernet trained {args.epochs - args.finetune_epochs} epochs, then each searched and uniform subnet "
            f"deployed and fine-tuned {args.finetune_epochs} epochs (lr {FT_LR}): {args.epochs} epochs per "
            "delivered model, as for prune()." if args.finetune_epochs else
            f"Searched and uniform subnets are not fine-tuned (BatchNorm statistics re-estimated on {CALIB_BATCHES} batches of {BATCH})."),
        "",
        *rows,
        "",
        "Verdicts: " + "; ".join(verdicts) + ".",
        "",
        f"Per seed: {per_seed}.",
        "",
        f"Step cost: a supernet step takes {1e3 * slim:.1f} ms vs {1e3 * plain:.1f} ms for a plain step "
        f"(CPU time, batch {BATCH}, 1 thread; subnets run on sliced weights): {ratio:.2f} × (target ≤ {2 + NUM_RANDOM} ×: "
        f"{'met' if ratio <= 2 + NUM_RANDOM else 'NOT met'}).",
        "",
        "Command: `OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/slim_digits.py "
        + ("" if args.seeds == [0, 1, 2] else f"--seeds {' '.join(map(str, args.seeds))} ")
        + f"--width {args.width} --epochs {args.epochs} --teacher-epochs {args.teacher_epochs} --score {args.score} "
        f"--finetune-epochs {args.finetune_epochs} --min-ratio {RATIOS[0]:g} --supernet-lr {SUPERNET_LR:g} "
        f"--divisor {DIVISOR} --calib-batches {CALIB_BATCHES} "
        + (f"--train-fraction {args.train_fraction:g} " if frac else "")
        + ("--search-extra " if args.search_extra else "")
        + "--write docs/benchmarks.md` "
        + f"({time.time() - t0:.0f} s on this machine).",
    ])
    print(body)
    if args.write:
        key = f"slim_digits_w{args.width}_{args.score}_ft{args.finetune_epochs}_min{RATIOS[0]:g}"
        if frac:
            key += f"_frac{args.train_fraction:g}_e{args.epochs}"
        if args.search_extra:
            key += "_searchextra"
        write_section(args.write, key, body)


if __name__ == "__main__":
    main()
