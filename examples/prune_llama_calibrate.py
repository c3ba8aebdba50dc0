"""Prune a small LLaMA-style model with calibration sentences, then recover it by logits distillation.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python examples/prune_llama_calibrate.py`` (CPU, about a minute,
no downloads: the sentences, the vocabulary and the model are made here).

Steps:
1. Build a tiny ``LlamaForCausalLM`` (transformers) and teach it the sentence grammar for a few steps,
   so that it has something to lose.
2. Score its MLP units and attention heads with ``TaylorImportance`` on calibration sentences
   (gradients summed over the batches; in float32 even for a bf16 model) and prune to a FLOPs target.
3. Recover the pruned model by logits distillation from the unpruned one
   (:func:`torchpare.distill.recover` with ``layers=[]``: only ``KLDivergence`` on the logits).
4. Print the teacher-student KL on held-out sentences before and after recovery.
"""

from __future__ import annotations

import argparse
import copy
import random
import warnings

import torch
import torch.nn.functional as F

from torchpare.distill import recover
from torchpare.prune import prune
from torchpare.prune.importance import TaylorImportance

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "a small bird", "the old man", "our team"]
VERBS = ["sees", "likes", "finds", "follows", "helps", "watches", "calls"]
OBJECTS = ["the ball", "a red car", "the garden", "a quiet river", "the city", "an open door"]
ENDINGS = ["today", "at night", "every morning", "in the rain", "after lunch", "again"]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)} ."
        for _ in range(n)
    ]


def build_vocab() -> dict[str, int]:
    words = sorted({w for part in (SUBJECTS, VERBS, OBJECTS, ENDINGS) for p in part for w in p.split()})
    return {w: i + 3 for i, w in enumerate([*words, "."])}  # 0 pad, 1 bos, 2 eos


def encode(texts: list[str], vocab: dict[str, int], length: int = 12) -> torch.Tensor:
    rows = []
    for text in texts:
        ids = [1, *(vocab[w] for w in text.split()), 2][:length]
        rows.append(ids + [0] * (length - len(ids)))
    return torch.tensor(rows)


def kl_on(student: torch.nn.Module, teacher: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean token-level KL(teacher || student) on non-padding positions."""
    with torch.no_grad():
        s = student(input_ids=ids).logits.float()
        t = teacher(input_ids=ids).logits.float()
    mask = ids != 0
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    return (kl * mask).sum().item() / mask.sum().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", type=float, default=0.6, help="keep this fraction of the FLOPs")
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--recover-steps", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = build_vocab()
    config = LlamaConfig(
        vocab_size=len(vocab) + 3, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=32,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    teacher = LlamaForCausalLM(config)
    train_ids = encode(sentences(256, seed=1), vocab)
    calib_ids = encode(sentences(48, seed=2), vocab)
    held_out = encode(sentences(64, seed=3), vocab)

    # 1. A teacher that knows the grammar.
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    teacher.train()
    for _ in range(args.pretrain_steps):
        batch = train_ids[torch.randint(0, len(train_ids), (32,))]
        loss = teacher(input_ids=batch, labels=batch.masked_fill(batch == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    print(f"teacher trained: LM loss {loss.item():.3f}")

    # 2. Taylor scores from 3 calibration batches, then prune heads and MLP units.
    student = copy.deepcopy(teacher)
    calib = [{"input_ids": b, "labels": b.masked_fill(b == 0, -100)} for b in calib_ids.chunk(3)]
    with warnings.catch_warnings():  # expected here: the per-layer widths do not fit a LlamaConfig
        warnings.filterwarnings("ignore", message=r"prune\(\): the pruned widths")
        student, summary = prune(
            student,
            {"input_ids": calib_ids[:2]},
            importance=TaylorImportance(),
            target_flops_ratio=args.flops,
            units=("head", "kv_head", "ffn"),
            data=calib,
        )
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    print(f"pruned to a {args.flops:.0%} FLOPs target: parameters {n_t} -> {n_s}\n{summary}")
    before = kl_on(student, teacher, held_out)

    # 3. Recovery by logits distillation (no feature layers).
    recovery = recover(student, teacher, layers=[], calculate_student_loss=False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student.train()
    for _ in range(args.recover_steps):
        batch = train_ids[torch.randint(0, len(train_ids), (32,))]
        losses = recovery.loss({"input_ids": batch})
        total = recovery.total_loss(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    student.eval()
    after = kl_on(student, teacher, held_out)
    print(f"teacher-student KL on {len(held_out)} held-out sentences: before recovery {before:.4f}, "
          f"after {after:.4f}")


if __name__ == "__main__":
    main()
