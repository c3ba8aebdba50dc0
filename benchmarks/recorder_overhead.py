"""Overhead of 50 active module recorders on a ResNet-style forward, measured side by side.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recorder_overhead.py``

Both measurements run in one process and are interleaved (plain forward, forward inside the
recorders' context, plain, ...); the recorded timing includes entering and leaving the context
(registering and removing 50 hooks), as a distillation step does. Prints the medians and the ratio,
for the default life of records (kept until the next ``with``, where each new record releases the
oldest old one) and for records dropped with ``manager.release()`` right after they are read.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Any

import torch
from torch import nn

from torchpare.record import ModuleOutputsRecorder, RecorderManager


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, mid: int, stride: int = 1) -> None:
        super().__init__()
        out = mid * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50Like(nn.Module):
    """ResNet-50 layout (3-4-6-3 bottlenecks) at reduced width."""

    def __init__(self, width: int = 16, num_classes: int = 100) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers, in_ch = [], width
        for i, blocks in enumerate((3, 4, 6, 3)):
            mid = width * 2**i
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(in_ch, mid, stride=2 if (b == 0 and i > 0) else 1))
                in_ch = mid * Bottleneck.expansion
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class NoOpHooks:
    """Control: the same forward hooks, keeping nothing (separates hook cost from keeping records)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.modules = [model.get_submodule(n) for n in names]
        self.handles: list = []

    def __enter__(self) -> NoOpHooks:
        self.handles = [m.register_forward_hook(_noop) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def __iter__(self):
        return iter(())

    def release(self) -> None:
        pass


def _noop(module: nn.Module, args: object, output: object) -> None:
    pass


def _faults() -> int:
    """Minor page faults of this process so far (memory the system hands out afresh)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(
    model: nn.Module, x: torch.Tensor, manager: Any, repeats: int, release: bool = False
) -> tuple[float, float, float, float, float]:
    """Interleaved timings; returns (median plain s, median recorded s, median of paired ratios,
    median minor page faults of a plain forward, of a recorded one).

    The plain forward's output is dropped after the clock stops. The records live as in a
    distillation step: read after the forward, then kept until the next ``with manager:`` (default)
    or dropped with ``manager.release()`` once read (``release=True``), outside the clock.
    """

    faults: dict[str, list[int]] = {"plain": [], "recorded": []}

    def plain() -> float:
        f0 = _faults()
        start = time.perf_counter()
        out = model(x)
        elapsed = time.perf_counter() - start
        faults["plain"].append(_faults() - f0)
        del out
        return elapsed

    def recorded() -> float:
        f0 = _faults()
        start = time.perf_counter()
        with manager:
            out = model(x)
        elapsed = time.perf_counter() - start
        faults["recorded"].append(_faults() - f0)
        del out
        if release:
            manager.release()
        return elapsed

    for _ in range(3):  # warm-up
        plain()
        recorded()
    base, rec = [], []
    for i in range(repeats):
        # Interleave, alternating which goes first, so drifts in machine load hit both alike.
        if i % 2:
            base.append(plain())
            rec.append(recorded())
        else:
            rec.append(recorded())
            base.append(plain())
    pair_ratio = statistics.median(r / b for r, b in zip(rec, base))
    return (
        statistics.median(base),
        statistics.median(rec),
        pair_ratio,
        statistics.median(faults["plain"]),
        statistics.median(faults["recorded"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="input height/width")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--recorders", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=("both", "train", "eval"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = ResNet50Like(args.width)
    x = torch.randn(args.batch, 3, args.size, args.size)
    # Recorders on convs and BNs spread over the whole network (every k-th such module).
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    step = max(1, len(names) // args.recorders)
    chosen = names[::step][: args.recorders]
    manager = RecorderManager({n: ModuleOutputsRecorder(n) for n in chosen})
    manager.initialize(model)

    start = time.perf_counter()
    for _ in range(100):
        with manager:
            pass
    enter_exit_us = (time.perf_counter() - start) / 100 * 1e6

    print(
        f"model: ResNet-50-like (3-4-6-3 bottlenecks) width {args.width}, {len(names)} conv/bn/linear modules; "
        f"input {tuple(x.shape)}; threads {args.threads}; {len(chosen)} ModuleOutputsRecorders; "
        f"{args.repeats} interleaved repeats"
    )
    print(f"entering + leaving the {len(chosen)} recorders alone: {enter_exit_us:.0f} us")
    modes = (
        ("train forward, autograd on (student side)", True, torch.enable_grad),
        ("eval forward under no_grad (teacher side)", False, torch.no_grad),
    )
    modes = tuple(m for m in modes if args.mode == "both" or (m[1] == (args.mode == "train")))
    control = NoOpHooks(model, chosen)
    for label, train, ctx in modes:
        model.train(train)
        with ctx():
            base, rec, pair, f_base, f_rec = measure(model, x, manager, args.repeats)
            r_base, r_rec, r_pair, rf_base, rf_rec = measure(model, x, manager, args.repeats, release=True)
            c_base, c_rec, c_pair, _, _ = measure(model, x, control, args.repeats)
            with manager:
                model(x)
        records = sum(len(r.data_buffer) for _, r in manager)
        print(
            f"{label}: plain {base * 1e3:.2f} ms | {len(chosen)} recorders {rec * 1e3:.2f} ms "
            f"({records} records) | ratio of medians {rec / base:.3f}, median paired ratio {pair:.3f} "
            f"(target <= 1.05); page faults per forward: plain {f_base:.0f}, recorded {f_rec:.0f}"
        )
        print(
            f"    records released right after reading (manager.release()): ratio of medians "
            f"{r_rec / r_base:.3f}, median paired ratio {r_pair:.3f}; page faults per forward: "
            f"plain {rf_base:.0f}, recorded {rf_rec:.0f}"
        )
        print(
            f"    control, {len(chosen)} no-op hooks keeping nothing: ratio of medians {c_rec / c_base:.3f}, "
            f"median paired ratio {c_pair:.3f}"
        )
        manager.release()


if __name__ == "__main__":
    main()
