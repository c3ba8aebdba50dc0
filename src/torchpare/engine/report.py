"""HTML + PNG report of a run folder, rebuilt from its saved ``results.json`` and ``metrics.jsonl`` files.

The HTML has no external assets: the PNGs are embedded as base64 data URIs (and also written next
to it). Plots use matplotlib's Agg backend.

Example:
    >>> print(format_table([{"name": "m", "accuracy": 0.5, "params": 10, "flops": 20,
    ...                      "latency_ms": 0.1, "size_bytes": 2048}]).splitlines()[0])
    model | test acc % | params | FLOPs | CPU latency ms (64 imgs) | size KiB
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from torchpare._utils import atomic_write_bytes
from torchpare.engine.metrics import read_metrics

__all__ = ["build_report", "build_comparison", "find_runs", "comparison_entries", "pareto_front", "format_table",
           "load_results", "series_table", "ReportError"]

COLUMNS = ("model", "test acc %", "params", "FLOPs", "CPU latency ms (64 imgs)", "size KiB")


class ReportError(FileNotFoundError):
    """The folder has no results to report."""


def _row(m: dict[str, Any]) -> list[str]:
    return [str(m["name"]), f"{100 * m['accuracy']:.2f}", f"{m['params']:,}", f"{m['flops']:,}",
            f"{m['latency_ms']:.3f}", f"{m['size_bytes'] / 1024:.1f}"]


def _columns(labels: dict[str, str] | None) -> list[str]:
    labels = labels or {}
    return [COLUMNS[0], labels.get("accuracy", COLUMNS[1]), *COLUMNS[2:4], labels.get("latency_ms", COLUMNS[4]),
            COLUMNS[5]]


def format_table(models: list[dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """The results as a plain-text table (what the demo prints last).

    Args:
        models: Result entries (``name``, ``accuracy``, ``params``, ``flops``, ``latency_ms``, ``size_bytes``).
        labels: Other headers for the ``accuracy`` / ``latency_ms`` columns (e.g. a cosine similarity).
    """
    columns = _columns(labels)
    rows = [columns, *[_row(m) for m in models]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def load_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``run_dir/results.json`` (``{"models": [...], "notes": [...]}``).

    Raises:
        ReportError: the folder or its ``results.json`` is missing or unreadable.
    """
    path = Path(run_dir) / "results.json"
    if not Path(run_dir).is_dir():
        raise ReportError(f"torchpare report: no run folder at '{run_dir}'.")
    if not path.is_file():
        raise ReportError(f"torchpare report: '{run_dir}' has no results.json; run a command or the demo first.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"torchpare report: '{path}' is not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ReportError(f"torchpare report: '{path}' has no 'models' list.")
    return data


def _curves(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted(run_dir.rglob("metrics.jsonl")):
        epochs = [r for r in read_metrics(path) if r.get("kind") == "epoch"]
        if epochs:
            name = path.parent.name if path.parent != run_dir else "run"
            out[name] = epochs
    return out


def _plots(run_dir: Path, models: list[dict[str, Any]], labels: dict[str, str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    paths = []
    colors = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    markers = "osD^v<>ph*"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, key, label in zip(axes, ("params", "flops", "latency_ms"),
                              ("parameters", labels.get("flops", "FLOPs per image"),
                               labels.get("latency_ms", "CPU latency, ms per 64 images"))):
        for i, m in enumerate(models):
            ax.scatter(m[key], 100 * m["accuracy"], s=60, color=colors(i), marker=markers[i % len(markers)],
                       label=m["name"], edgecolors="black", linewidths=0.5)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(labels.get("accuracy", "test accuracy %"))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(models)), fontsize=8, frameon=False)
    fig.suptitle("accuracy vs cost")
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(models) - 1) // 4), 1, 1))
    paths.append(run_dir / "accuracy_vs_cost.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    curves = _curves(run_dir)
    if curves:
        with_val = any("val_accuracy" in eps[0] for eps in curves.values())
        fig, axes_c = plt.subplots(1, 2 if with_val else 1, figsize=(13 if with_val else 7, 4.2), squeeze=False)
        ax_l, ax_a = axes_c[0, 0], (axes_c[0, 1] if with_val else None)
        order = {m["name"]: i for i, m in enumerate(models)}
        for name, eps in sorted(curves.items(), key=lambda kv: order.get(kv[0], len(order))):
            x = [e["epoch"] + 1 for e in eps]
            color = colors(order[name]) if name in order else None
            ax_l.plot(x, [e["train_loss"] for e in eps], label=name, color=color)
            if ax_a is not None and "val_accuracy" in eps[0]:
                ax_a.plot(x, [100 * e["val_accuracy"] for e in eps], label=name, color=color)
        ax_l.set(xlabel="epoch", ylabel="training loss (total)", yscale="log", title="training loss")
        if ax_a is not None:
            ax_a.set(xlabel="epoch", ylabel="validation accuracy %", title="validation accuracy")
        for ax in [a for a in (ax_l, ax_a) if a is not None]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(run_dir / "training_curves.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


SERIES = (("searched", "searched subnets (AutoSlim)", "o", "-"), ("prune", "prune() + fine-tune, same total steps", "s", "--"),
          ("uniform", "uniform-width subnets", "^", ":"), ("supernet", "supernet (max width)", "*", ""))


def _has_series(models: list[dict[str, Any]]) -> bool:
    return any(m.get("series") in ("searched", "prune", "uniform") for m in models)


def _series_plot(run_dir: Path, models: list[dict[str, Any]], labels: dict[str, str]) -> Path:
    """Accuracy vs FLOPs per series (searched subnets, prune() baselines, uniform widths, the supernet) and
    the Pareto front over all of them."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10")
    for i, (key, label, marker, line) in enumerate(SERIES):
        pts = sorted((m["flops"], 100 * m["accuracy"]) for m in models if m.get("series") == key)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, linestyle=line or "none", marker=marker, markersize=12 if key == "supernet" else 8,
                color=colors(i), markeredgecolor="black", markeredgewidth=0.5, label=label)
    usable = [m for m in models if isinstance(m.get("flops"), int | float) and m["flops"] > 0]
    front = pareto_front([(float(m["flops"]), float(m["accuracy"])) for m in usable])
    if front:
        ax.plot([usable[j]["flops"] for j in front], [100 * usable[j]["accuracy"] for j in front], color="black",
                alpha=0.5, linewidth=3, drawstyle="steps-post", zorder=0, label="Pareto front (all models)")
    ax.set_xscale("log")
    ax.set_xlabel(labels.get("flops", "FLOPs per image"))
    ax.set_ylabel(labels.get("accuracy", "test accuracy %"))
    ax.set_title("searched subnets vs prune() + fine-tune vs uniform widths")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = run_dir / "searched_vs_pruned.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def series_table(models: list[dict[str, Any]]) -> list[list[str]]:
    """One row per target: accuracy % (and FLOPs) of the searched subnet, the prune() + fine-tune model and the
    uniform-width subnet, and the searched subnet's lead over each (points); a header row first.

    Example:
        >>> rows = series_table([{"series": "searched", "target": 0.5, "accuracy": 0.97, "flops": 90},
        ...                      {"series": "prune", "target": 0.5, "accuracy": 0.96, "flops": 100}])
        >>> rows[1]
        ['50%', '97.00 (90)', '96.00 (100)', '–', '+1.00', '–']
    """
    head = ["target", "searched % (FLOPs)", "prune() + fine-tune % (FLOPs)", "uniform width % (FLOPs)",
            "searched − prune()", "searched − uniform"]
    by: dict[float, dict[str, dict[str, Any]]] = {}
    for m in models:
        if m.get("series") in ("searched", "prune", "uniform") and isinstance(m.get("target"), int | float):
            by.setdefault(float(m["target"]), {})[m["series"]] = m
    rows = [head]
    for target in sorted(by, reverse=True):
        got = by[target]

        def cell(k: str, got: dict[str, dict[str, Any]] = got) -> str:
            return f"{100 * got[k]['accuracy']:.2f} ({got[k]['flops']:,})" if k in got else "–"

        def gap(k: str, got: dict[str, dict[str, Any]] = got) -> str:
            if "searched" not in got or k not in got:
                return "–"
            return f"{100 * (got['searched']['accuracy'] - got[k]['accuracy']):+.2f}"

        rows.append([f"{round(100 * target)}%", cell("searched"), cell("prune"), cell("uniform"), gap("prune"),
                     gap("uniform")])
    return rows


def _with_baselines(models: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The models with each prune run's unpruned ``baseline`` before it, and one note of ratios per baseline."""
    out, notes = [], []
    for m in models:
        base = m.get("baseline")
        if isinstance(base, dict):
            base = {"name": f"{m['name']} (unpruned)", **base}
            out.append(base)
            r = _ratios(m, base)
            notes.append(f"{m['name']} vs {base['name']}: FLOPs x{r['flops_ratio']:.3f}, params "
                         f"x{r['params_ratio']:.3f}, CPU speed-up x{r['speedup']:.2f}, metric change "
                         f"{100 * r['metric_change']:+.2f} points")
        out.append(m)
    return out, notes


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` and its PNGs into ``run_dir`` from the saved results and metrics.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: no ``results.json`` in ``run_dir``.
    """
    run_dir = Path(run_dir)
    data = load_results(run_dir)
    models, ratio_notes = _with_baselines(data["models"])
    pngs = _plots(run_dir, models, data.get("labels") or {})
    labels = data.get("labels")
    series = ""
    if _has_series(models):
        pngs.insert(0, _series_plot(run_dir, models, labels or {}))
        table = series_table(models)
        series = ("<h2>searched subnets vs prune() + fine-tune vs uniform widths</h2><table>"
                  + "".join("<tr>" + "".join(f"<{t}>{html.escape(c)}</{t}>" for c in r) + "</tr>"
                            for r, t in zip(table, ["th"] + ["td"] * (len(table) - 1))) + "</table>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _columns(labels))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row(m)) + "</tr>" for m in models)
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in [*data.get("notes", []), *ratio_notes])
    imgs = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img alt="{p.name}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in pngs
    )
    title = html.escape(str(data.get("title", f"torchpare report: {run_dir.name}")))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
<table><tr>{head}</tr>{rows}</table>{series}
<ul>{notes}</ul>{imgs}
</body></html>
"""
    out = run_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    return out


# -- comparing runs ---------------------------------------------------------------------------------
COMPARE_COLUMNS = ("run", "params", "FLOPs", "CPU latency ms", "size KiB", "FLOPs ratio", "params ratio",
                   "speed-up", "metric change")
COST_AXES = (("flops", "FLOPs per example"), ("params", "parameters"), ("latency_ms", "CPU latency, ms per batch"))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost and a higher metric.

    Args:
        points: ``(cost, metric)`` pairs (lower cost and higher metric are better).

    Returns:
        The indices on the front, in increasing cost.

    Example:
        >>> pareto_front([(10, 0.9), (5, 0.8), (7, 0.7), (20, 0.95), (20, 0.9)])
        [1, 0, 3]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def find_runs(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The run folders named by ``paths``: a folder with ``results.json`` is a run; any other folder stands
    for every run folder below it (not those inside another run folder, e.g. its stages).

    Raises:
        ReportError: a path that does not exist, or no run folder found at all.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("a", "b/c"):
        ...     (root / name).mkdir(parents=True)
        ...     _ = (root / name / "results.json").write_text('{"models": []}')
        >>> [str(p.relative_to(root)) for p in find_runs([root])]
        ['a', 'b/c']
    """
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ReportError(f"torchpare report: no run folder at '{path}'.")
        if (path / "results.json").is_file():
            found = [path]
        else:
            found = []
            for res in sorted(path.rglob("results.json")):
                run = res.parent
                if not any(p in found for p in run.parents):
                    found.append(run)
        if not found:
            raise ReportError(f"torchpare report: '{path}' has no results.json (in it or below it); "
                              f"run a command or the demo first.")
        runs.extend(r for r in found if r not in runs)
    return runs


def _ratios(entry: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    def div(a: Any, b: Any) -> float:
        return float(a) / float(b) if b else float("nan")

    return {"flops_ratio": div(entry["flops"], base["flops"]), "params_ratio": div(entry["params"], base["params"]),
            "speedup": div(base["latency_ms"], entry["latency_ms"]),
            "metric_change": float(entry["accuracy"]) - float(base["accuracy"])}


def comparison_entries(runs: list[Path]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One entry per model of each run (``label``, ``run``, the results fields), a prune run's unpruned
    baseline (``is_baseline: True``) just before it, and its ratios (``flops_ratio``, ``params_ratio``,
    ``speedup``, ``metric_change``) on the pruned entry.

    Returns:
        The entries and the labels (``accuracy`` / ``latency_ms`` headers; generic ones when runs differ).
    """
    entries: list[dict[str, Any]] = []
    labels_seen: list[dict[str, str]] = []
    for run in runs:
        data = load_results(run)
        labels_seen.append(data.get("labels") or {})
        models = data["models"]
        for m in models:
            label = run.name if len(models) == 1 else f"{run.name}/{m['name']}"
            base = m.get("baseline")
            if isinstance(base, dict):
                pruned = {k: v for k, v in m.items() if k != "baseline"}
                entries.append({**base, "label": f"{label} (unpruned)", "run": str(run), "is_baseline": True})
                entries.append({**pruned, "label": label, "run": str(run), **_ratios(m, base)})
            else:
                entries.append({**m, "label": label, "run": str(run)})
    first = labels_seen[0] if labels_seen else {}
    same = all(lab.get("accuracy") == first.get("accuracy") for lab in labels_seen)
    labels = {"accuracy": first.get("accuracy", "test accuracy %") if same else "task metric (×100)"}
    return entries, labels


def _compare_row(e: dict[str, Any]) -> list[str]:
    def fmt(key: str, spec: str, scale: float = 1.0) -> str:
        v = e.get(key)
        return format(scale * v if scale != 1.0 else v, spec) if isinstance(v, (int, float)) else "–"

    return [str(e["label"]), fmt("accuracy", ".2f", 100), fmt("params", ","), fmt("flops", ","),
            fmt("latency_ms", ".3f"), fmt("size_bytes", ".1f", 1 / 1024), fmt("flops_ratio", ".3f"),
            fmt("params_ratio", ".3f"), fmt("speedup", ".2f"), fmt("metric_change", "+.2f", 100)]


def _compare_plots(entries: list[dict[str, Any]], out: Path, metric_label: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10" if len(entries) <= 10 else "tab20")
    paths = []
    for key, axis_label in COST_AXES:
        usable = [(i, e) for i, e in enumerate(entries)
                  if isinstance(e.get(key), (int, float)) and e[key] > 0 and isinstance(e.get("accuracy"), (int, float))]
        fig, ax = plt.subplots(figsize=(8, 5))
        for n, (i, e) in enumerate(usable):
            hollow = bool(e.get("is_baseline"))
            ax.scatter(e[key], 100 * e["accuracy"], s=70, marker="s" if hollow else "o",
                       facecolors="none" if hollow else colors(n % colors.N),
                       edgecolors=colors(n % colors.N) if hollow else "black", linewidths=1.2, label=e["label"])
            if i > 0 and "flops_ratio" in e and entries[i - 1].get("is_baseline"):
                b = entries[i - 1]
                if isinstance(b.get(key), (int, float)) and b[key] > 0:
                    ax.annotate("", xy=(e[key], 100 * e["accuracy"]), xytext=(b[key], 100 * b["accuracy"]),
                                arrowprops={"arrowstyle": "->", "color": "grey", "alpha": 0.7})
        if usable:
            front = pareto_front([(float(e[key]), float(e["accuracy"])) for _, e in usable])
            xs = [usable[j][1][key] for j in front]
            ys = [100 * usable[j][1]["accuracy"] for j in front]
            ax.plot(xs, ys, "--", color="black", alpha=0.6, drawstyle="steps-post", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(axis_label)
        ax.set_ylabel(metric_label)
        ax.set_title(f"{metric_label} vs {axis_label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out.parent / f"{out.stem}_vs_{key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def build_comparison(paths: list[str | os.PathLike[str]], output: str | os.PathLike[str] | None = None) -> Path:
    """One HTML page comparing run folders: a table and metric-vs-FLOPs/params/latency plots with a
    Pareto front. A prune run also shows its unpruned baseline and the ratios to it.

    Args:
        paths: Run folders, or folders holding run folders (see :func:`find_runs`).
        output: The HTML file to write (default: ``report.html`` in the folder common to ``paths``); the
            PNGs go next to it (``<stem>_vs_flops.png``, ``_vs_params.png``, ``_vs_latency_ms.png``).

    Returns:
        The path of the HTML page.

    Raises:
        ReportError: a missing folder, or no ``results.json`` found.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> for name, acc, flops in (("small", 0.9, 100), ("big", 0.95, 400)):
        ...     (root / name).mkdir()
        ...     _ = (root / name / "results.json").write_text(json.dumps({"models": [{"name": name,
        ...         "accuracy": acc, "params": flops, "flops": flops, "latency_ms": 1.0, "size_bytes": 4096}]}))
        >>> build_comparison([root]).name
        'report.html'
    """
    runs = find_runs(paths)
    entries, labels = comparison_entries(runs)
    if output is None:
        common = Path(os.path.commonpath([str(Path(p).resolve()) for p in paths]))
        output = common / "report.html"
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    metric_label = labels["accuracy"]
    pngs = _compare_plots(entries, out, metric_label)
    columns = [COMPARE_COLUMNS[0], metric_label, *COMPARE_COLUMNS[1:]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        f'<tr class="{"baseline" if e.get("is_baseline") else "run"}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in _compare_row(e)) + "</tr>"
        for e in entries
    )
    imgs = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img alt="{p.name}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in pngs
    )
    sources = "".join(f"<li>{html.escape(str(r))}</li>" for r in runs)
    title = f"torchpare: {len(runs)} run(s) compared"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}tr.baseline{{color:#555;font-style:italic}}
img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>
<p>Ratios compare a pruned model with its unpruned baseline (the row above it): FLOPs and parameters as
pruned / unpruned, speed-up as unpruned latency / pruned latency, metric change in points.</p>
<table><tr>{head}</tr>{rows}</table>
<h2>runs</h2><ul>{sources}</ul>{imgs}
</body></html>
"""
    atomic_write_bytes(out, page.encode())
    return out
