"""torchpare vs Torch-Pruning on the zoo: graph build time, groups found, correctness; pruned-CNN latency.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_vs_torch_pruning.py [--repeats 7] [--timeout 60]

Part 1, per zoo model, in ONE child process per model (both tools side by side, so their times are
comparable; a child that exceeds ``--timeout`` is killed, which is how a Torch-Pruning hang shows):

* build time: ``DependencyGraph.build`` vs ``build_dependency`` + ``get_all_groups`` (Torch-Pruning's
  groups come from the second call), median of interleaved rounds with ``gc.collect()`` before each
  call (the cold protocol of ``_buildtime.py``), also as a multiple of one eval forward;
  ``graph_build.py`` adds the steady and first-call protocols;
* prunable groups each finds (Torch-Pruning: roots Conv/Linear, the last Linear ignored, Hugging Face
  models traced with ``use_cache=False`` and ``output_transform=logits``, which it needs);
* correctness: a random 30% plan on every group whose pruning has a zeroed equivalent (torchpare:
  ``group.exact``; Torch-Pruning: groups without a LayerNorm/RMSNorm/GroupNorm member), pruned vs the
  original with those units zeroed at their consumers, max relative difference (ok <= 1e-4).

Part 2: latency of a 50%-channel-pruned VGG and ResNet (batch 32, 3x64x64, one thread, median of
repeats, interleaved) next to the FLOPs ratio, torchpare and Torch-Pruning's ``MetaPruner`` (same L1
criterion, ratio 0.5); target: speed-up x FLOPs ratio >= 0.8 (speed-up >= 0.8 x the FLOPs reduction).
Part 3 (issue 18): wall time of one-shot pruning, ``prune(model, x, target_flops_ratio=0.5)`` next to
Torch-Pruning's ``MetaPruner(pruning_ratio=0.5).step()`` on larger zoo CNNs (median of interleaved runs
on fresh copies; the copy is not timed). Run one part with ``--parts 3``.
Part 4 (issue 18): real FLOP counts (forwards under ``FlopCounterMode``) and wall time of ``prune()`` on 15
zoo and Hugging Face tiny models under five settings (FLOPs and parameter targets, per-layer,
iterative, ``round_to=1``): the target search ranks plans analytically and counts the chosen one.

Torch-Pruning is optional: without it, only torchpare is measured.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn

from torchpare.prune import DependencyGraph, count
from torchpare.prune.verify import mask_like_plan
from torchpare.zoo import ZOO, ResNetBottleneck, VGGNet

try:  # run as a script (benchmarks/ on sys.path)
    from _buildtime import interleaved_ms
except ImportError:  # pragma: no cover - imported as benchmarks.prune_vs_torch_pruning
    from benchmarks._buildtime import interleaved_ms

try:
    import torch_pruning as tp
except ImportError:  # optional: the comparison columns are skipped
    tp = None

_NORM_NAMES = ("LayerNorm", "RMSNorm", "GroupNorm")


def _forward(model: nn.Module, x: Any) -> torch.Tensor:
    out = model(**x) if isinstance(x, dict) else model(x)
    return out.logits if hasattr(out, "logits") else out


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _subset(size: int, gen: torch.Generator) -> list[int]:
    k = max(1, min(size - 1, round(0.3 * size)))
    return sorted(torch.randperm(size, generator=gen)[:k].tolist())


# -- torchpare ------------------------------------------------------------------------------------
def _torchpare(name: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model, x = ZOO[name]()
    graph = DependencyGraph.build(model, x)
    gen = torch.Generator().manual_seed(0)
    plan = {g.id: _subset(g.size, gen) for g in graph.groups() if g.exact and g.size > 1}
    masked = mask_like_plan(model, plan, x)
    graph.prune(plan)
    with torch.no_grad():
        diff = _rel_diff(_forward(model, x), _forward(masked, x))
    return {"groups": len(graph.groups()), "planned": len(plan), "rel_diff": diff}


# -- Torch-Pruning --------------------------------------------------------------------------------
def _tp_graph(model: nn.Module, x: Any) -> tuple[Any, list[Any]]:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    kwargs = {}
    if isinstance(x, dict):
        kwargs["output_transform"] = lambda out: out.logits
        if getattr(getattr(model, "config", None), "use_cache", None) is not None:
            x = {**x, "use_cache": False}  # Torch-Pruning cannot trace the KV-cache concatenation
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, **kwargs)
    groups = list(dg.get_all_groups(ignored_layers=[last], root_module_types=[nn.Conv2d, nn.Linear]))
    return dg, groups


def _zero_inputs(layer: nn.Module, channels: list[int]) -> None:
    """Zero the weights through which ``layer`` reads input ``channels`` (grouped convs included)."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return
    if type(layer).__name__ == "Conv1D":  # HF Conv1D: weight is (in, out)
        weight[channels] = 0
    elif isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1:
        in_per, out_per = weight.shape[1], weight.shape[0] // layer.groups
        for c in channels:  # input channel c is read by its group's outputs through local column c % in_per
            g = c // in_per
            weight[g * out_per : (g + 1) * out_per, c % in_per] = 0
    else:
        weight[:, channels] = 0


def _tp_masked(model: nn.Module, groups: list[Any]) -> nn.Module:
    """Copy of ``model`` with each group's planned channels zeroed at the layers reading them."""
    names = {m: n for n, m in model.named_modules()}
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for group in groups:
            for item in group:
                handler = getattr(item.dep.handler, "__name__", "")
                module = item.dep.target.module
                if handler != "prune_in_channels" or module not in names:
                    continue
                target = masked.get_submodule(names[module])
                _zero_inputs(target, sorted(item.idxs))
    return masked


def _torch_pruning(name: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model, x = ZOO[name]()
    dg, groups = _tp_graph(model, x)
    gen = torch.Generator().manual_seed(0)
    roots = []
    for group in groups:
        if any(any(k in type(it.dep.target.module).__name__ for k in _NORM_NAMES) for it in group):
            continue
        size = len(group[0].idxs)
        if size > 1:
            roots.append((group[0].dep.target.module, group[0].dep.handler, _subset(size, gen)))
    planned = [dg.get_pruning_group(m, h, idxs=i) for m, h, i in roots]
    masked = _tp_masked(model, planned)
    for m, h, i in roots:  # re-derive each group on the current model: earlier pruning shifts indices
        dg.get_pruning_group(m, h, idxs=i).prune()
    with torch.no_grad():
        diff = _rel_diff(_forward(model, x), _forward(masked, x))
    return {"groups": len(groups), "planned": len(roots), "rel_diff": diff}


# Torch-Pruning hangs on this one (grouped-query attention): it is not timed, only tried, last
_TP_HANGS = {"hf_llama"}


def _build_times(name: str, repeats: int) -> dict[str, float]:
    """Build ms of each tool, interleaved rounds with ``gc.collect()`` before every call (the cold
    protocol of ``_buildtime.py``); a tool that fails to build is left out."""
    torch.manual_seed(0)
    model, x = ZOO[name]()
    tools = {"torchpare": lambda: DependencyGraph.build(model, x)}
    if tp is not None and name not in _TP_HANGS:
        try:
            _tp_graph(model, x)
            tools["tp"] = lambda: _tp_graph(model, x)
        except Exception:  # reported by the correctness run below
            pass
    return interleaved_ms(tools, repeats, cold=True)


def _child(name: str, repeats: int, queue: Any) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, x = ZOO[name]()
    with torch.no_grad():
        queue.put(("forward_ms", _median_s(lambda: _forward(model, x), repeats) * 1e3))
    times = _build_times(name, repeats)
    for key, fn in (("torchpare", _torchpare), ("tp", _torch_pruning if tp is not None else None)):
        if fn is None:
            continue
        try:
            queue.put((key, {"build_ms": times.get(key, float("nan")), **fn(name)}))
        except Exception as err:  # a tool failing on a model is a result, not a crash of the benchmark
            queue.put((key, {"error": f"{type(err).__name__}: {str(err)[:80]}"}))
    queue.put(("done", None))


def _run_model(name: str, repeats: int, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, repeats, queue))
    proc.start()
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            key, value = queue.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            break
        if key == "done":
            break
        results[key] = value
    if proc.is_alive():
        proc.kill()
        results.setdefault("tp", {"error": f"no result within {timeout:.0f} s (killed)"})
    proc.join()
    return results


def _cell(r: dict[str, Any] | None, fwd: float) -> str:
    if r is None:
        return f"{'-':>8s} {'-':>6s} {'-':>4s} {'-':>9s}"
    if "error" in r:
        return f"{r['error'][:31]:>31s}"
    ok = "ok" if r["rel_diff"] <= 1e-4 else "WRONG"
    if r["planned"] == 0:
        ok = "none"  # nothing was pruned, so nothing could go wrong
    return f"{r['build_ms']:8.1f} {r['build_ms'] / fwd:6.1f} {r['groups']:4d} {r['rel_diff']:7.1e} {ok:5s}"


def part1(repeats: int, timeout: float) -> None:
    print("Part 1: graph build (median ms, x one eval forward), prunable groups, random 30% plan vs masked")
    print(f"{'model':16s} {'fwd ms':>7s} | {'torchpare':^36s} | {'Torch-Pruning':^36s} | TP/ours")
    print(f"{'':16s} {'':>7s} | {'ms':>8s} {'x fwd':>6s} {'grps':>4s} {'rel diff':>7s} {'':5s} |")
    for name in ZOO:
        res = _run_model(name, repeats, timeout)
        fwd = res.get("forward_ms", float("nan"))
        ours, theirs = res.get("torchpare"), res.get("tp")
        ratio = ""
        if ours and theirs and "error" not in ours and "error" not in theirs:
            ratio = f"{theirs['build_ms'] / ours['build_ms']:.2f}"
        print(f"{name:16s} {fwd:7.2f} | {_cell(ours, fwd)} | {_cell(theirs, fwd)} | {ratio}")


# -- Part 2: latency ------------------------------------------------------------------------------
def _half_plan(graph: DependencyGraph) -> dict[str, list[int]]:
    plan = {}
    for g in graph.groups():
        if g.unit == "channel" and g.size > 1:
            w = _l1_scores(graph, g)
            plan[g.id] = sorted(torch.argsort(w)[: g.size // 2].tolist())
    return plan


def _l1_scores(graph: DependencyGraph, group: Any) -> torch.Tensor:
    scores = torch.zeros(group.size)
    for m in group.members:
        if m.role != "out" or m.param_name != "weight":
            continue
        w = graph.model.get_submodule(m.module_name).weight.detach().abs()
        per = w.transpose(0, m.dim).reshape(w.shape[m.dim], -1).sum(1)
        scores += torch.tensor([float(per[list(ix)].sum()) for ix in m.index_map])
    return scores


def _tp_half(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The same 50% L1 channel pruning done by Torch-Pruning's ``MetaPruner`` (classifier ignored)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[last]
    )
    pruner.step()
    return model


def _latency(models: list[nn.Module], x: torch.Tensor, repeats: int) -> list[float]:
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for m in models:  # warm-up
            m(x)
        for _ in range(repeats):  # interleaved, so load changes hit every model alike
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                m(x)
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def part2(repeats: int) -> None:
    print("\nPart 2: 50%-channel pruning (L1), batch 32 x 3x64x64, 1 thread, median ms")
    print(
        f"{'model':28s} {'tool':13s} {'FLOPs ratio':>11s} {'ms':>7s} {'speed-up':>8s} {'x FLOPs ratio':>13s}"
    )
    torch.set_num_threads(1)
    x = torch.randn(32, 3, 64, 64)
    for label, make in (
        ("VGGNet(32,64,128,128)", lambda: VGGNet(widths=(32, 64, 128, 128), image_size=64)),
        ("ResNetBottleneck(width=16)", lambda: ResNetBottleneck(width=16)),
    ):
        torch.manual_seed(0)
        base = make().eval()
        ours = copy.deepcopy(base)
        graph = DependencyGraph.build(ours, x[:2])
        graph.prune(_half_plan(graph))
        rows = [("unpruned", base), ("torchpare", ours)]
        if tp is not None:
            rows.append(("Torch-Pruning", _tp_half(copy.deepcopy(base), x[:2]).eval()))
        base_flops = count(base, x)["flops"]
        times = _latency([m for _, m in rows], x, repeats)
        for (tool, model), ms in zip(rows, times):
            ratio = count(model, x)["flops"] / base_flops
            speedup = times[0] / ms
            print(f"{label:28s} {tool:13s} {ratio:11.3f} {ms:7.1f} {speedup:7.2f}x {speedup * ratio:13.2f}")


def _prune_once_ours(model: nn.Module, x: torch.Tensor) -> nn.Module:
    from torchpare.prune import prune

    return prune(model, x, target_flops_ratio=0.5)[0]


def _prune_once_tp(model: nn.Module, x: torch.Tensor) -> nn.Module:
    return _tp_half(model, x)


def _counting_passes() -> list[int]:
    """Counts the forwards torchpare runs under ``FlopCounterMode`` (each a real FLOP count: of the
    unpruned model, of a candidate plan, of the pruned model)."""
    import torchpare.prune.counting as counting

    passes: list[int] = []
    base = counting.FlopCounterMode

    class Counted(base):  # type: ignore[misc, valid-type]
        def __enter__(self) -> Any:
            passes.append(1)
            return super().__enter__()

    counting.FlopCounterMode = Counted
    return passes


def part3(repeats: int) -> None:
    """prune() wall time next to Torch-Pruning's MetaPruner on the same CNNs (interleaved medians)."""
    from torchpare.zoo import DenseNetConcat, MobileNetV2Like, ShuffleNetV2Like

    print("\nPart 3: one-shot pruning wall time, batch 1 x 3x64x64, 1 thread, median s over interleaved runs")
    print(
        "  torchpare: prune(model, x, target_flops_ratio=0.5) (L1, searches the FLOPs target, default"
        " widths); counts: forwards under FlopCounterMode per prune() call"
    )
    print(
        "  Torch-Pruning: MetaPruner(L1, pruning_ratio=0.5).step() (a fixed channel ratio, no target search)"
    )
    print(
        f"{'model':36s} {'params M':>8s} | {'ours s':>7s} {'FLOPs':>6s} {'counts':>6s} | "
        f"{'TP s':>7s} {'FLOPs':>6s} | ours/TP"
    )
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 64, 64)
    passes = _counting_passes()
    models = (
        ("VGGNet(64,128,256,512)", lambda: VGGNet(widths=(64, 128, 256, 512), image_size=64)),
        ("ResNetBottleneck(width=64)", lambda: ResNetBottleneck(width=64)),
        ("DenseNetConcat(growth=32, 4 layers)", lambda: DenseNetConcat(growth=32, layers_per_block=4)),
        ("MobileNetV2Like(width=32)", lambda: MobileNetV2Like(width=32)),
        ("ShuffleNetV2Like(width=24)", lambda: ShuffleNetV2Like(width=24)),
    )
    for label, make in models:
        torch.manual_seed(0)
        base = make().eval()
        base_flops = count(base, x)["flops"]
        tools = {"ours": _prune_once_ours}
        if tp is not None:
            tools["tp"] = _prune_once_tp
        times: dict[str, list[float]] = {k: [] for k in tools}
        ratios: dict[str, float] = {}
        failed: dict[str, str] = {}
        n_counts = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, fn in list(tools.items()):  # warm-up: first-call caches are not the steady cost
                try:
                    fn(copy.deepcopy(base), x)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    failed[k] = f"fails ({type(exc).__name__})"
                    del tools[k], times[k]
            for _ in range(repeats):
                for k, fn in tools.items():
                    model = copy.deepcopy(base)
                    gc.collect()
                    passes.clear()
                    t0 = time.perf_counter()
                    pruned = fn(model, x)
                    times[k].append(time.perf_counter() - t0)
                    if k == "ours":
                        n_counts = len(passes)
                    ratios[k] = count(pruned, x)["flops"] / base_flops  # not timed
        med = {k: statistics.median(v) for k, v in times.items()}
        params = sum(p.numel() for p in base.parameters()) / 1e6
        tp_cells = f"{med['tp']:7.2f} {ratios['tp']:6.3f}" if "tp" in med else f"{failed.get('tp', '-'):>14s}"
        if "ours" not in med:
            print(f"{label:36s} {params:8.2f} | {failed['ours']} | {tp_cells}", flush=True)
            continue
        ratio = f"{med['ours'] / med['tp']:.2f}" if "tp" in med else "-"
        print(
            f"{label:36s} {params:8.2f} | {med['ours']:7.2f} {ratios['ours']:6.3f} {n_counts:6d} | "
            f"{tp_cells} | {ratio}",
            flush=True,
        )
    print(f"load average after part 3: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


def part4() -> None:
    """Real counts per prune() call across zoo and HF tiny models and settings (issue 18's search)."""
    from torchpare.prune import prune
    from torchpare.zoo.hf import hf_tiny

    print("\nPart 4: prune() on the zoo inputs: real counts (forwards under FlopCounterMode) per call")
    print(f"{'model':14s} {'settings':52s} {'ratio':>6s} {'within':>6s} {'counts':>6s} {'s':>6s} plans")
    torch.set_num_threads(1)
    passes = _counting_passes()
    names = ("vgg", "resnet", "densenet", "mobilenetv2", "shufflenetv2", "grouped_conv", "vit", "swin",
             "swinv2", "hf_bert", "hf_gpt2", "hf_llama", "tiny:mixtral", "tiny:t5", "tiny:qwen2_moe")
    settings = (
        {"target_flops_ratio": 0.5},
        {"target_params_ratio": 0.5},
        {"target_flops_ratio": 0.4, "global_pruning": False},
        {"target_flops_ratio": 0.5, "iterative_steps": 3},
        {"target_flops_ratio": 0.6, "round_to": 1},
    )
    total_counts, total_s = 0, 0.0
    for name in names:
        for kwargs in settings:
            torch.manual_seed(0)
            model, x = hf_tiny(name[5:]) if name.startswith("tiny:") else ZOO[name]()
            passes.clear()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, summary = prune(model, x, **kwargs)
            seconds = time.perf_counter() - t0
            total_counts, total_s = total_counts + len(passes), total_s + seconds
            label = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            print(
                f"{name:14s} {label:52s} {summary.achieved_ratio:6.3f} {summary.within_tolerance!s:>6s} "
                f"{len(passes):6d} {seconds:6.2f} "
                f"{hashlib.sha1(json.dumps(summary.plans).encode()).hexdigest()[:10]}",
                flush=True,
            )
    print(f"total: {total_counts} counts, {total_s:.1f} s; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per model (both tools)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 3")
    args = parser.parse_args()
    if tp is None:
        print("torch-pruning is not installed (pip install torch-pruning): only torchpare is measured.")
    parts = set(args.parts.split(","))
    if "1" in parts:
        part1(args.repeats, args.timeout)
    if "2" in parts and not args.skip_latency:
        part2(max(args.repeats, 10))
    if "3" in parts:
        part3(max(3, args.repeats // 2))
    if "4" in parts:
        part4()


if __name__ == "__main__":
    main()
