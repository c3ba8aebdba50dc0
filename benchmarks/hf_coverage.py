"""Hugging Face architecture coverage: head groups, a 70%-params prune, and graph build vs one forward.

For every tiny architecture of ``torchpare.zoo.hf.HF_TINY`` (random init, built offline) this prints:
the number of head groups and heads the dependency graph finds, the params ratio ``prune()`` reaches
for ``target_params_ratio=0.7`` and whether the pruned model runs, and the median time of
``DependencyGraph.build`` divided by the median time of one forward (interleaved rounds).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hf_coverage.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import warnings

import torch

from torchpare.prune import count, prune
from torchpare.prune.graph import DependencyGraph
from torchpare.zoo.hf import HF_TINY, hf_tiny

try:  # run as a script (benchmarks/ on sys.path)
    from _buildtime import build_and_forward_s
except ImportError:  # pragma: no cover - imported as benchmarks.hf_coverage
    from benchmarks._buildtime import build_and_forward_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| architecture | head groups | heads | params ratio at target 0.7 | pruned model runs | build / forward |")
    print("|---|---|---|---|---|---|")
    for name in sorted(HF_TINY):
        torch.manual_seed(0)
        model, inputs = hf_tiny(name)
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = DependencyGraph.build(model, inputs)
        heads = [g for g in graph.groups() if g.unit in ("head", "kv_head")]
        build_s, forward_s = build_and_forward_s(model, inputs, args.rounds)
        before = count(model, inputs)["params"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruned, _ = prune(model, inputs, target_params_ratio=0.7)  # MoE: per-expert widths
            with torch.no_grad():
                pruned(**inputs)
            ratio, runs = f"{count(pruned, inputs)['params'] / before:.3f}", "yes"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            ratio, runs = "-", f"no ({type(exc).__name__})"
        print(f"| {name} | {len(heads)} | {sum(g.size for g in heads)} | {ratio} | {runs} | "
              f"{build_s / forward_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
