"""Distillation with 10% labels and an odd global batch, in 1 or N processes (tests/engine/test_distributed_equal.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.engine.distributed import shutdown_distributed
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer
from torchpare.zoo import DigitsCNN, DigitsMLP, DigitsSmallCNN

KD = {
    "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "LOGITS"}},
    "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc"}},
    "distill_losses": {"kd": {"type": "KLDivergence", "tau": 4}},
    "loss_forward_mappings": {"kd": {"preds_S": {"from_student": True, "recorder": "logits"},
                                     "preds_T": {"from_student": False, "recorder": "logits"}}},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--bn", action="store_true", help="a BatchNorm student with sync_batchnorm (CUDA only)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = load_digits_split(0)
    x, y = split.x_train[:100], split.y_train[:100].clone()
    y[torch.arange(100) % 10 != 0] = -100  # 10% labels
    data = TensorDataset(x, y)
    teacher = DigitsCNN(width=4)
    student = DigitsSmallCNN(width=2) if args.bn else DigitsMLP(hidden=16)
    kd = {**KD, "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "fc" if args.bn else "fc2"}}}
    algo = SingleTeacherDistill(student, teacher, kd)
    cfg = TrainConfig(epochs=3, batch_size=33, lr=0.01, optimizer="sgd", device="cpu", quiet=True,
                      sync_batchnorm=args.bn)  # 100 = 33 + 33 + 33 + 1: odd batches, a short last one
    trainer = Trainer(algo, data, config=cfg, run_dir=args.run_dir)
    trainer.fit()
    if trainer.dist.is_main:
        torch.save(student.state_dict(), Path(args.run_dir) / "final.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main()
