"""Graph build vs one forward on a torchvision-style ViT built on ``nn.MultiheadAttention``.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_build_mha.py [--size b32|small] [--rounds 5]

Builds :class:`torchpare.zoo.vit.ViT` at a ViT-B/32-like size (224x224 images, 32x32 patches, hidden
768, 12 heads, MLP 3072, 12 layers; batch 1) and prints, as medians of interleaved rounds (``steady``
protocol of ``_buildtime.py``): one forward with autograd, one under ``no_grad``, one
``DependencyGraph.build``, and the ratio build / forward (the target of issue 18 is <= 2). It also
prints the peak traced-Python memory of one build (``tracemalloc``) next to the parameter bytes, and
the FLOPs ``count()`` reports in eval mode next to a hand count.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _buildtime import interleaved_ms  # noqa: E402

from torchpare.prune import DependencyGraph, count  # noqa: E402
from torchpare.zoo.vit import ViT  # noqa: E402

SIZES = {
    "b32": dict(image_size=224, patch_size=32, hidden=768, num_heads=12, mlp_dim=3072, num_layers=12),
    "b16": dict(image_size=224, patch_size=16, hidden=768, num_heads=12, mlp_dim=3072, num_layers=12),
    "small": dict(image_size=64, patch_size=16, hidden=192, num_heads=3, mlp_dim=768, num_layers=4),
}


def hand_flops(cfg: dict, batch: int) -> int:
    p, e, f, n_layers = cfg["patch_size"], cfg["hidden"], cfg["mlp_dim"], cfg["num_layers"]
    n = (cfg["image_size"] // p) ** 2
    t = n + 1
    per_layer = 2 * t * e * 3 * e + 4 * t * t * e + 2 * t * e * e + 2 * 2 * t * e * f
    return batch * (2 * n * e * 3 * p * p + n_layers * per_layer + 2 * e * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="b32")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = SIZES[args.size]
    model = ViT(num_classes=1000, **cfg).eval()
    x = torch.randn(1, 3, cfg["image_size"], cfg["image_size"])

    def forward_grad() -> None:
        model(x)

    def forward_no_grad() -> None:
        with torch.no_grad():
            model(x)

    def build() -> None:
        DependencyGraph.build(model, x)

    build()  # warm-up: first calls of every op, class hooks
    times = interleaved_ms(
        {"forward": forward_grad, "forward_no_grad": forward_no_grad, "build": build}, args.rounds, cold=False
    )
    tracemalloc.start()
    build()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    flops = count(model, x)["flops"]
    print(
        f"ViT {args.size}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, batch 1, "
        f"torch {torch.__version__}, 1 thread, median of {args.rounds} interleaved rounds"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| forward (autograd) | {times['forward']:.1f} ms |")
    print(f"| forward (no_grad) | {times['forward_no_grad']:.1f} ms |")
    print(f"| DependencyGraph.build | {times['build']:.1f} ms |")
    print(f"| build / forward (autograd) | {times['build'] / times['forward']:.2f} x |")
    print(f"| build peak Python memory / parameter bytes | {peak / param_bytes:.3f} x |")
    print(
        f"| count() FLOPs (eval) / hand count | {flops / hand_flops(cfg, 1):.4f} ({flops / 1e9:.2f} GFLOPs) |"
    )


if __name__ == "__main__":
    main()
