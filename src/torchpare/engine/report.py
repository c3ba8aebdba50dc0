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

__all__ = ["build_report", "format_table", "load_results", "ReportError"]

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


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` and its PNGs into ``run_dir`` from the saved results and metrics.

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: no ``results.json`` in ``run_dir``.
    """
    run_dir = Path(run_dir)
    data = load_results(run_dir)
    models = data["models"]
    pngs = _plots(run_dir, models, data.get("labels") or {})
    labels = data.get("labels")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _columns(labels))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row(m)) + "</tr>" for m in models)
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in data.get("notes", []))
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
<table><tr>{head}</tr>{rows}</table>
<ul>{notes}</ul>{imgs}
</body></html>
"""
    out = run_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    return out
