"""Slimmable subnets at default widths (``RatioPruner(divisor="auto")``) vs exact counts (``divisor=1``).

What an AutoSlim user gets from a supernet: the greedy search walks each space down a ladder of
``max_channel_bins`` (12) bins, rounded to the pruner's divisor. This script deploys the uniform subnets
of that ladder (every space at bin ``b`` of 12) from one supernet with quarter ratios, once with exact
counts and once with the default divisor, picks per divisor the bin nearest each FLOPs target, and
times both next to the full model: one thread, eval,
``no_grad``, CPU time of the thread on a steady C heap (as ``prune_speedup.py``), median of interleaved
rounds. ``eff`` = speed-up / ideal, ideal = 1 / FLOPs ratio: how much of the FLOPs saving turns into
time. The ladders differ, so the two subnets of a target differ a little in FLOPs: compare ``eff``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/slim_widths.py --repeats 15
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
from prune_speedup import MODELS, _latency, _steady_allocator
from torch import nn

from torchpare.prune import RatioPruner, count

QUARTERS = (0.25, 0.5, 0.75, 1.0)
BINS = 12


def _subnet_model(base: nn.Module, x: torch.Tensor, divisor: int | str, ratio: float) -> tuple[nn.Module, int]:
    """The deployed uniform subnet at ``ratio`` and how many of its changed widths are not multiples of 16."""
    model = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = RatioPruner(model, x[:2], ratios=QUARTERS, divisor=divisor)
        cfg = pruner.export_subnet(pruner.ratio_subnet(ratio))
        pruner.set_max_channel()
        small = pruner.deploy_subnet(model, cfg)
    old = dict(base.named_modules())
    odd = 0
    for name, m in small.named_modules():
        w, o = getattr(m, "out_channels", None), getattr(old.get(name), "out_channels", None)
        if w is not None and o is not None and w != o and w % 16:
            odd += 1
    return small.eval(), odd


def _nearest(base: nn.Module, x: torch.Tensor, divisor: int | str, target: float, flops0: float
             ) -> tuple[int, nn.Module, float, int]:
    """The ladder bin whose uniform subnet's FLOPs ratio is nearest ``target``: (bin, model, ratio, odd)."""
    best = None
    for b in range(1, BINS + 1):
        small, odd = _subnet_model(base, x, divisor, b / BINS)
        ratio = count(small, x[:2])["flops"] / flops0
        if best is None or abs(ratio - target) < abs(best[2] - target):
            best = (b, small, ratio, odd)
    assert best is not None
    return best


def run(names: list[str], targets: list[float], repeats: int) -> None:
    steady = _steady_allocator()
    torch.set_num_threads(1)
    print(f"steady heap: {steady}; pruner ratios {QUARTERS}; per divisor, the uniform subnet of the "
          f"{BINS}-bin ladder nearest each FLOPs target")
    print("| model | target | divisor | bin | FLOPs ratio | speed-up | eff | widths not multiples of 16 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        build, x, _ = MODELS[name]
        torch.manual_seed(0)
        base = build().eval()
        flops0 = count(base, x[:2])["flops"]
        for target in targets:
            picks = {d: _nearest(base, x, d, target, flops0) for d in (1, "auto")}
            times = _latency([base] + [p[1] for p in picks.values()], x, repeats)
            for (divisor, (b, _, ratio, odd)), t in zip(picks.items(), times[1:]):
                speed = times[0] / t
                print(f"| {name} | {target:g} | {divisor} | {b}/{BINS} | {ratio:.3f} | {speed:.2f} | "
                      f"{speed * ratio:.2f} | {odd} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["resnet", "mobilenetv2", "densenet32"])
    parser.add_argument("--targets", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    run(args.models, args.targets, args.repeats)


if __name__ == "__main__":
    main()
