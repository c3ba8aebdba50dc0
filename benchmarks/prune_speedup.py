"""Do pruned models run as fast as their FLOPs promise? Speed-up / ideal at 50% FLOPs, defaults first.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_speedup.py [--repeats 15] [--models resnet,bert]

For each model, ``prune(model, x, target_flops_ratio=0.5)`` with the defaults (``round_to=None``: kept
channel counts rounded to a multiple chosen from each group's width, see ``auto_round_to``), the same
with ``round_to=1`` (exact counts) and, where it runs and is installed, Torch-Pruning's ``MetaPruner``
(L1, its defaults, classifier ignored, whole heads on BERT; its channel ratio bisected until the FLOPs
ratio is 0.5 +- 1%). Latency: one thread, eval mode, ``no_grad``, the median of ``--repeats`` interleaved
rounds (every variant once per round, so machine noise hits them alike) after a warm-up, timed in CPU
time of the thread (``time.thread_time``: on a shared machine, time the process waits for a core does not
count) on a steady C heap (``--allocator steady``, see ``_steady_allocator``; ``glibc`` keeps its defaults).

``ideal = 1 / FLOPs ratio`` (FLOPs counted on the timed inputs); ``eff = speed-up / ideal``; target
``eff >= 0.9``. ``odd`` counts the pruned channel groups whose kept width is not a multiple of 8.

The second table says where the defaults lose: CPU time and FLOPs per aten op (``_OpClock``), unpruned
against defaults, and ``ideal*``, the speed-up if every op with FLOPs shrank exactly with its own FLOPs
while the ops without FLOPs (norms, activations, elementwise, embeddings, copies) took their measured
pruned time: an Amdahl bound. ``eff* = speed-up / ideal*`` near 1 means the kernels shrink with their
FLOPs and the gap to ``ideal`` is structural (time in ops that FLOPs do not count, and ops whose time per
FLOP differs, such as attention kernels whose FLOPs shrink less than the matmuls'); a low ``eff*`` means
the kept widths run slowly per FLOP (e.g. convolutions below 16 output channels on AVX-512, which cost
what 16 cost).

Models: ResNet-, MobileNetV2- and DenseNet-like CNNs from ``torchpare.zoo`` (batch 32, 3x64x64) and
BERT- / LLaMA-like Hugging Face configs built offline (random weights, batch 8, sequence 128).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

from torchpare.prune import count, prune
from torchpare.prune.counting import attention_flop_formulas
from torchpare.zoo import DenseNetConcat, MobileNetV2Like, ResNetBottleneck

try:
    import torch_pruning as tp
except ImportError:  # optional: the Torch-Pruning rows are skipped
    tp = None


def _tokens(batch: int, seq: int, vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _bert() -> nn.Module:
    import transformers as tf

    config = tf.BertConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, max_position_embeddings=128, num_labels=3,
    )
    return tf.BertForSequenceClassification(config)


def _llama() -> nn.Module:
    import transformers as tf

    config = tf.LlamaConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    return tf.LlamaForCausalLM(config)


_IMAGES = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))
MODELS: dict[str, tuple[Callable[[], nn.Module], Any, bool]] = {
    # name: (builder, timed inputs, Torch-Pruning runs on it: its MetaPruner did not finish the
    # LLaMA-like model within 300 s here (num_heads for q/k/v, output_transform; Torch-Pruning 1.6.0))
    "resnet": (lambda: ResNetBottleneck(width=16), _IMAGES, True),
    "mobilenetv2": (lambda: MobileNetV2Like(width=32), _IMAGES, True),
    "densenet": (lambda: DenseNetConcat(growth=16, layers_per_block=4), _IMAGES, True),
    # DenseNet-121's own growth rate: its 32-channel layers can keep a multiple of 16 at half FLOPs
    "densenet32": (lambda: DenseNetConcat(growth=32, layers_per_block=4), _IMAGES, True),
    "bert": (_bert, _tokens(8, 128, 1000), True),
    "llama": (_llama, _tokens(8, 128, 1000), False),
}


def _small(x: Any) -> Any:
    """The first two samples: what prune() traces and counts with (ratios do not depend on the batch)."""
    return {k: v[:2] for k, v in x.items()} if isinstance(x, dict) else x[:2]


def _call(model: nn.Module, x: Any) -> Any:
    return model(**x) if isinstance(x, dict) else model(x)


def _odd_widths(before: nn.Module, after: nn.Module) -> int:
    """Pruned Conv/Linear output widths that are not multiples of 8."""
    odd = 0
    old = dict(before.named_modules())
    for name, m in after.named_modules():
        w = getattr(m, "out_channels", getattr(m, "out_features", None))
        o = old.get(name)
        ow = getattr(o, "out_channels", getattr(o, "out_features", None))
        if w is not None and ow is not None and w != ow and w % 8:
            odd += 1
    return odd


def _torchpare(base: nn.Module, x: Any, **kwargs: Any) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = prune(copy.deepcopy(base), _small(x), target_flops_ratio=0.5, **kwargs)
    return model.eval()


def _tp_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Torch-Pruning's ``num_heads`` for a Hugging Face BERT: each self-attention's q/k/v projections."""
    heads = {}
    for m in model.modules():
        if all(hasattr(m, p) for p in ("query", "key", "value", "num_attention_heads")):
            heads.update(dict.fromkeys((m.query, m.key, m.value), m.num_attention_heads))
    return heads


def _tp_once(base: nn.Module, x: Any, ratio: float) -> nn.Module:
    model = copy.deepcopy(base)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    heads = _tp_heads(model)
    extra: dict[str, Any] = {}
    if heads:  # whole heads, as torchpare prunes them (its BERT example's settings)
        extra = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False, "head_pruning_ratio": ratio}
    if isinstance(x, dict):
        extra["output_transform"] = lambda out: out.logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unwrapped parameters detected" (norm weights: pruned right)
        pruner = tp.pruner.MetaPruner(
            model, _small(x), importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
            ignored_layers=[last], **extra,
        )
        pruner.step()
    return model.eval()


def _torch_pruning(base: nn.Module, x: Any) -> nn.Module:
    """Torch-Pruning at 50% FLOPs: bisection of its (uniform) channel ratio."""
    base_flops = count(base, _small(x))["flops"]
    lo, hi, best = 0.0, 0.9, None
    for _ in range(8):
        mid = (lo + hi) / 2
        model = _tp_once(base, x, mid)
        r = count(model, _small(x))["flops"] / base_flops
        if best is None or abs(r - 0.5) < abs(best[0] - 0.5):
            best = (r, model)
        if abs(r - 0.5) <= 0.005:
            break
        lo, hi = (mid, hi) if r > 0.5 else (lo, mid)
    assert best is not None
    return best[1]


def _steady_allocator() -> bool:
    """Keep freed memory in the C heap (glibc ``mallopt``): no ``mmap`` blocks, no trimming.

    Under glibc's defaults an activation of a few MB is ``mmap``-ed and handed back on ``free``, so every
    forward pays page faults on fresh memory (up to ~60% of a CNN forward here, and bimodal: the dynamic
    ``mmap`` threshold moves with what ran before). A steady heap times the kernels, as a caching
    allocator (jemalloc, tcmalloc, a warmed-up server) does. Returns whether it could be set.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def _latency(models: list[nn.Module], x: Any, repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for m in models:  # warm-up
            _call(m, x)
            _call(m, x)
        for _ in range(repeats):
            for i, m in enumerate(models):
                t0 = time.thread_time()
                _call(m, x)
                times[i].append(time.thread_time() - t0)
    return [statistics.median(t) * 1e3 for t in times]


# what count() counts: PyTorch's formulas and torchpare's for the fused attention kernels
_FORMULAS = {**flop_registry, **{op: shape_wrapper(f) for op, f in attention_flop_formulas().items()}}


class _OpClock(TorchDispatchMode):
    """Sums, per aten op, the CPU time of this thread spent in it (``time.thread_time``: preemption by
    other processes on a busy machine does not count, unlike ``torch.profiler``'s wall-clock self times)
    and its FLOPs (PyTorch's ``flop_registry`` and torchpare's attention formulas, as ``count()``; ops without an entry, such as
    norms, activations, softmax outside attention kernels, embeddings and copies, have none)."""

    def __init__(self) -> None:
        super().__init__()
        self.ms: dict[str, float] = {}
        self.flops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        t0 = time.thread_time()
        out = func(*args, **(kwargs or {}))
        key = func.overloadpacket.__name__
        if key == "convolution" and len(args) > 8 and args[8] > 1:
            key = "convolution(grouped)"  # depthwise / grouped: memory-bound, few FLOPs for its time
        self.ms[key] = self.ms.get(key, 0.0) + (time.thread_time() - t0) * 1e3
        formula = _FORMULAS.get(func.overloadpacket)
        if formula is not None:
            self.flops[key] = self.flops.get(key, 0) + int(formula(*args, **(kwargs or {}), out_val=out))
        return out


def _op_times(models: list[nn.Module], x: Any, rounds: int = 3) -> list[tuple[dict[str, float], dict[str, int]]]:
    """Per model: ``({aten op: median CPU ms of one forward}, {op: FLOPs of one forward})``, over
    ``rounds`` interleaved forwards."""
    acc: list[dict[str, list[float]]] = [{} for _ in models]
    flops: list[dict[str, int]] = [{} for _ in models]
    with torch.no_grad():
        for _ in range(rounds):
            for i, m in enumerate(models):
                with _OpClock() as clock:
                    _call(m, x)
                for k, v in clock.ms.items():
                    acc[i].setdefault(k, []).append(v)
                flops[i] = clock.flops
    return [
        ({k: statistics.median(v + [0.0] * (rounds - len(v))) for k, v in a.items()}, f)
        for a, f in zip(acc, flops)
    ]


def amdahl(
    base: tuple[dict[str, float], dict[str, int]], pruned: tuple[dict[str, float], dict[str, int]]
) -> dict[str, Any]:
    """The speed-up pruning could reach if every op with FLOPs (convs, matmuls, attention kernels) took
    ``unpruned time x its own FLOPs ratio`` and the ops without FLOPs took the time they take in the
    pruned model (an Amdahl bound from the per-op CPU times of :class:`_OpClock`).

    Returns ``bound`` (that speed-up), ``other_share`` (the share of the unpruned time in ops without
    FLOPs), ``other_shrink`` / ``flop_shrink`` (pruned / unpruned time of each kind), ``flop_ideal`` (the
    time ratio the ops with FLOPs would have at their FLOPs ratios) and ``worst``: the three ops whose
    pruned time exceeds that ideal the most, as ``(op, unpruned ms, pruned ms, FLOPs ratio or None)``.
    """
    (base_ms, base_flops), (pruned_ms, pruned_flops) = base, pruned

    def ratio(op: str) -> float | None:
        return pruned_flops.get(op, 0) / base_flops[op] if base_flops.get(op) else None

    flop_b = sum(v for k, v in base_ms.items() if k in base_flops)
    flop_p = sum(v for k, v in pruned_ms.items() if k in base_flops)
    flop_ideal = sum(v * (ratio(k) or 0.0) for k, v in base_ms.items() if k in base_flops)
    other_b = sum(v for k, v in base_ms.items() if k not in base_flops)
    other_p = sum(v for k, v in pruned_ms.items() if k not in base_flops)
    total_b = flop_b + other_b

    def excess(op: str) -> float:
        r = ratio(op)
        return pruned_ms.get(op, 0.0) - base_ms[op] * (r if r is not None else 0.0)

    worst = [(k, base_ms[k], pruned_ms.get(k, 0.0), ratio(k)) for k in sorted(base_ms, key=excess, reverse=True)[:3]]
    return {
        "bound": total_b / max(flop_ideal + other_p, 1e-9),
        "other_share": other_b / max(total_b, 1e-9),
        "other_shrink": other_p / max(other_b, 1e-9),
        "flop_shrink": flop_p / max(flop_b, 1e-9),
        "flop_ideal": flop_ideal / max(flop_b, 1e-9),
        "worst": worst,
    }


def run(
    name: str, repeats: int, also: tuple[int, ...] = (), profile_rounds: int = 3
) -> list[dict[str, Any]]:
    make, x, with_tp = MODELS[name]
    torch.manual_seed(0)
    base = make().eval()
    variants: list[tuple[str, nn.Module | str]] = [("unpruned", base)]
    settings: list[tuple[str, dict[str, Any]]] = [("defaults", {}), ("round_to=1", {"round_to": 1})]
    settings += [(f"round_to={n}", {"round_to": n}) for n in also]
    for label, kwargs in settings:
        t0 = time.perf_counter()
        variants.append((label, _torchpare(base, x, **kwargs)))
        print(f"  {name}: prune() {label} in {time.perf_counter() - t0:.1f} s", flush=True)
    if tp is not None and with_tp:
        try:
            variants.append(("Torch-Pruning", _torch_pruning(base, x)))
        except Exception as err:  # noqa: BLE001 - reported in the table, never hidden
            variants.append(("Torch-Pruning", f"failed: {type(err).__name__}: {str(err)[:60]}"))
    timed = [(label, m) for label, m in variants if isinstance(m, nn.Module)]
    ms = dict(zip([label for label, _ in timed], _latency([m for _, m in timed], x, repeats)))
    base_flops = count(base, x)["flops"]
    rows = []
    for label, m in variants:
        if not isinstance(m, nn.Module):
            rows.append({"model": name, "variant": label, "error": m})
            continue
        ratio = count(m, x)["flops"] / base_flops
        speedup = ms["unpruned"] / ms[label]
        rows.append({
            "model": name, "variant": label, "flops_ratio": ratio, "ms": ms[label], "speedup": speedup,
            "ideal": 1 / ratio, "eff": speedup * ratio, "odd": _odd_widths(base, m) if m is not base else 0,
        })
    if profile_rounds:
        pruned = dict(timed)["defaults"]
        row = next(r for r in rows if r["variant"] == "defaults")
        row.update(amdahl(*_op_times([base, pruned], x, profile_rounds)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--also", default="", help="more round_to values to compare, e.g. 8,16")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}")
    parser.add_argument("--profile-rounds", type=int, default=3,
                        help="profiled forwards per model for the ideal* column (0: skip the profile)")
    parser.add_argument("--allocator", choices=("steady", "glibc"), default="steady",
                        help="steady: no mmap/trim of freed memory (times the kernels); glibc: its defaults")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.allocator == "steady":
        print(f"steady C heap (mallopt): {_steady_allocator()}")
    if tp is None:
        print("torch-pruning is not installed (pip install torch-pruning): its rows are skipped.")
    rows = []
    for name in args.models.split(","):
        rows += run(
            name.strip(), args.repeats, tuple(int(n) for n in args.also.split(",") if n), args.profile_rounds
        )
    print(f"\n{'model':12s} {'variant':14s} {'FLOPs':>6s} {'ms':>8s} {'speed-up':>8s} {'ideal':>6s} "
          f"{'eff':>5s} {'odd':>4s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:12s} {r['variant']:14s} {r['error']}")
            continue
        flag = "" if r["variant"] == "unpruned" or r["eff"] >= 0.9 else "  < 0.9"
        print(f"{r['model']:12s} {r['variant']:14s} {r['flops_ratio']:6.3f} {r['ms']:8.1f} "
              f"{r['speedup']:7.2f}x {r['ideal']:6.2f} {r['eff']:5.2f} {r['odd']:4d}{flag}")
    bounded = [r for r in rows if "bound" in r]
    if bounded:
        print(
            "\nWhere the defaults lose (CPU ms per aten op, unpruned vs defaults). ideal* = the speed-up if "
            "every op with FLOPs\nshrank exactly with its own FLOPs and the ops without FLOPs took their "
            "pruned time (Amdahl); eff* = speed-up / ideal*.\nno-FLOP% = share of the unpruned time in ops "
            "without FLOPs; x = pruned / unpruned time (FLOP ops: measured, at their FLOPs ratios)."
        )
        print(f"{'model':12s} {'speed-up':>8s} {'ideal':>6s} {'ideal*':>6s} {'eff':>5s} {'eff*':>5s} "
              f"{'no-FLOP%':>8s} {'x':>5s} {'FLOP ops x':>10s} {'(ideal)':>7s}  ops furthest from their ideal")
        for r in bounded:
            worst = ", ".join(
                f"{k} {b:.1f}->{p:.1f}" + (f" (FLOPs x{f:.2f})" if f is not None else "") for k, b, p, f in r["worst"]
            )
            print(f"{r['model']:12s} {r['speedup']:7.2f}x {r['ideal']:6.2f} {r['bound']:6.2f} {r['eff']:5.2f} "
                  f"{r['speedup'] / r['bound']:5.2f} {100 * r['other_share']:7.1f}% {r['other_shrink']:5.2f} "
                  f"{r['flop_shrink']:10.2f} {r['flop_ideal']:7.2f}  {worst}")


if __name__ == "__main__":
    main()
