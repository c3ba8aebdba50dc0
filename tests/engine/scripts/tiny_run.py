"""A tiny training run for the subprocess tests (exact resume after SIGKILL, 2-process DDP)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchpare.datasets import load_digits_split
from torchpare.engine.distributed import shutdown_distributed
from torchpare.engine.schedule import TrainConfig
from torchpare.engine.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = load_digits_split(0)
    data = TensorDataset(split.x_train[:192], split.y_train[:192])
    val = TensorDataset(split.x_val[:64], split.y_val[:64])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(args.dropout), nn.Linear(32, 10))

    def kill(trainer: Trainer, record: dict) -> None:
        if record["step"] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=0.01, checkpoint_every=4, device="cpu", quiet=True)
    trainer = Trainer(model, data, val_data=val, config=cfg, run_dir=args.run_dir, callbacks=[kill])
    trainer.fit(resume=args.resume)
    if trainer.dist.is_main:
        torch.save(model.state_dict(), Path(args.run_dir) / "final.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main()
