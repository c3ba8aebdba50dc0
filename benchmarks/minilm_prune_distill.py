"""Prune all-MiniLM-L6-v2 to 50% FLOPs (heads + FFN), distil it back on a sentences file, from the CLI.

Runs the shipped config exactly as a user would, then measures the folder it wrote::

    OMP_NUM_THREADS=2 python benchmarks/minilm_prune_distill.py [configs/minilm_prune_distill.yaml] [--set K=V ...]

Steps: write the sentences file with ``scripts/make_sentences.py`` when missing (deterministic, no
downloads); run ``torchpare prune CONFIG --overwrite`` (prune with :func:`torchpare.prune.prune`, distil
with :func:`torchpare.distill.recover`, save a sentence-transformers folder); reload that folder with
:func:`torchpare.prune.from_pretrained` (a ``SentenceTransformer``; plain ``SentenceTransformer(folder)``
cannot rebuild per-layer head counts, which BERT's config cannot state) and measure, on the run's held-out sentences (the data
section's ``test_fraction``, the same seeded split the run used):

* mean cosine similarity of the reloaded student's ``encode`` to the teacher's ``encode``;
* CPU latency of both on one batch (interleaved rounds, medians), speed-up over the FLOPs ratio; and
  the CPU time of one forward on one thread (``time.process_time``: what an idle core would take, readable
  on a busy machine);
* wall time of the whole job (sentences file, CLI run, measurement), training steps and steps/s, and
  the machine's load average (the measurement is honest only on a quiet machine).

Prints one JSON line and writes ``benchmark.json`` next to the run folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {"n": 12000, "seed": 0}  # scripts/make_sentences.py arguments when the file is missing


@torch.inference_mode()
def _cpu_time_ms(models: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], repeats: int) -> dict[str, float]:
    """Median CPU time (ms, ``time.process_time``) of one forward per model on one thread, interleaved."""
    import statistics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        for m in models.values():
            m.eval()(dict(batch))  # warm-up
        for _ in range(repeats):
            for name, m in models.items():
                t = time.process_time()
                m(dict(batch))
                times[name].append((time.process_time() - t) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    measure_only = "--measure-only" in argv  # measure an existing run folder again
    argv = [a for a in argv if a != "--measure-only"]
    config = argv[0] if argv and not argv[0].startswith("--") else str(ROOT / "configs" / "minilm_prune_distill.yaml")
    overrides = [a for a in argv[1:] if a != "--set"] if argv and not argv[0].startswith("--") else \
        [a for a in argv if a != "--set"]
    from torchpare.cli.main import main as cli
    from torchpare.engine.config import apply_overrides, load_config
    from torchpare.engine.models import folder_of

    cfg = apply_overrides(load_config(config), overrides)
    data = cfg["data"]
    path = Path(data["path"])
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "scripts"))
        from make_sentences import main as make

        make(["--out", str(path), "--n", str(SENTENCES["n"]), "--seed", str(SENTENCES["seed"])])

    t_cli = time.perf_counter()
    args = ["prune", config, "--overwrite", "--quiet"] + [x for o in overrides for x in ("--set", o)]
    code = 0 if measure_only else cli(args)
    if code != 0:
        raise SystemExit(f"torchpare {' '.join(args)} exited {code}")
    cli_s = time.perf_counter() - t_cli
    run_dir = Path(cfg["output"])
    results = json.loads((run_dir / "results.json").read_text())["models"][0]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    steps = max((m["step"] for m in metrics if m.get("kind") == "step"), default=0)
    train_s = sum(e["epoch_time_s"] for e in epochs)

    # -- measure the folder the run wrote, as a user of sentence-transformers would --------------------
    from sentence_transformers import SentenceTransformer

    from torchpare.datasets.files import _read_sentences, _split_indices
    from torchpare.demo.text import quiet_hf_progress_bars
    from torchpare.engine.measure import compare_latency_ms
    from torchpare.prune import from_pretrained

    texts = _read_sentences(path, "data.path", data.get("text_field", "text"))
    _, _, test_idx = _split_indices(None, len(texts), float(data.get("val_fraction", 0.1)),
                                    float(data.get("test_fraction", 0.1)), int(data.get("seed", 0)))
    held_out = [texts[i] for i in test_idx]
    with quiet_hf_progress_bars():
        teacher = SentenceTransformer(str(folder_of(cfg["model"], "sentence_transformers")), device="cpu")
        # per-layer widths (global pruning, BERT's derived head size) cannot be stated in config.json, so the
        # folder reloads with torchpare.prune.from_pretrained (a SentenceTransformer with the pruned encoder)
        student = from_pretrained(run_dir / "model", device="cpu")
    kw = {"convert_to_tensor": True, "batch_size": 64, "show_progress_bar": False}
    cosine = float(F.cosine_similarity(student.encode(held_out, **kw), teacher.encode(held_out, **kw)).mean())
    tok = teacher.tokenizer
    batch = dict(tok(held_out[:32], padding=True, truncation=True, max_length=int(data.get("max_length", 128)),
                     return_tensors="pt"))
    lat = compare_latency_ms({"teacher": teacher, "student": student}, batch, repeats=11)
    cpu = _cpu_time_ms({"teacher": teacher, "student": student}, batch, repeats=11)
    flops_ratio = results["flops"] / results["baseline"]["flops"]
    speedup = lat["teacher"] / lat["student"]
    wall = time.perf_counter() - t0
    out = {
        "command": f"torchpare {' '.join(args)}",
        "held_out_sentences": len(held_out),
        "cosine_to_teacher": round(cosine, 4),
        "cosine_engine_test_metric": round(float(results["accuracy"]), 4),
        "flops_ratio": round(flops_ratio, 4),
        "params_ratio": round(results["params"] / results["baseline"]["params"], 4),
        "latency_ms_batch32": {k: round(v, 1) for k, v in lat.items()},
        "speedup": round(speedup, 3),
        "speedup_over_ideal": round(speedup * flops_ratio, 3),
        # one thread, CPU time of this process (not the time it waited for a core): the speed-up an idle
        # core would show, readable on a busy machine
        "cpu_time_ms_1_thread": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_time_speedup_over_ideal": round(cpu["teacher"] / cpu["student"] * flops_ratio, 3),
        "steps": steps,
        "steps_per_s": round(steps / max(train_s, 1e-9), 3),
        "time_s": {"train": round(train_s, 1), "cli": round(cli_s, 1), "wall": round(wall, 1)},
        "threads": torch.get_num_threads(),
        "load_avg_1_5_15": {"before": [round(x, 2) for x in load_before],
                            "after": [round(x, 2) for x in os.getloadavg()]},
        "targets_met": {"cosine>=0.95": cosine >= 0.95, "speedup>=0.9x_ideal": speedup * flops_ratio >= 0.9,
                        "wall<=600s": wall <= 600},
    }
    (run_dir.parent / f"{run_dir.name}_benchmark.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
