"""`torchpare report RUN_DIR [RUN_DIR...]`: one page comparing runs, with prune baselines and a Pareto front."""

from __future__ import annotations

import html
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from torchpare.cli.main import main
from torchpare.engine.report import ReportError, build_comparison, build_report, find_runs, pareto_front

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _entry(name: str, acc: float, flops: int, latency: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "accuracy": acc, "params": flops // 2, "flops": flops, "latency_ms": latency,
            "size_bytes": 4 * flops, **extra}


def _runs(root: Path) -> Path:
    """A train run, a prune run (with its unpruned baseline) and a two-model demo folder."""
    runs = root / "runs"
    base = _entry("teacher", 0.97, 40_000, 2.0)
    folders = {
        "teacher": {"models": [base]},
        "pruned": {"models": [_entry("prune", 0.95, 16_000, 1.0, baseline={k: v for k, v in base.items()
                                                                             if k != "name"})]},
        "demo": {"models": [_entry("student", 0.93, 8_000, 0.6), _entry("big", 0.96, 80_000, 3.0)]},
    }
    for name, data in folders.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text(json.dumps(data))
    (runs / "notes").mkdir()  # a folder without results is not a run
    return runs


def _cells(page: str) -> list[list[str]]:
    rows = page.split("<tr")[2:]
    return [[html.unescape(c.split("</td>")[0]) for c in r.split("<td>")[1:]] for r in rows]


def _png_is_not_blank(path: Path) -> bool:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and float(img[..., :3].std()) > 0.01


def test_comparison_page_has_one_row_per_model_and_the_prune_baseline_with_ratios(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    page_path = build_comparison([runs])
    assert page_path == runs.resolve() / "report.html"
    page = page_path.read_text()
    rows = {r[0]: r for r in _cells(page)}
    assert list(rows) == ["demo/student", "demo/big", "pruned (unpruned)", "pruned", "teacher"]
    assert rows["pruned"][1:3] == ["95.00", "8,000"]
    assert rows["pruned"][6:] == ["0.400", "0.400", "2.00", "-2.00"]  # FLOPs, params, speed-up, points
    assert rows["pruned (unpruned)"][3] == "40,000" and rows["teacher"][6] == "–"
    assert 'class="baseline"' in page
    for key in ("flops", "params", "latency_ms"):
        png = runs / f"report_vs_{key}.png"
        assert _png_is_not_blank(png)
        assert f'alt="{png.name}"' in page


def test_cli_compares_named_run_folders_into_the_given_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _runs(tmp_path)
    out = tmp_path / "cmp" / "page.html"
    assert main(["report", str(runs / "teacher"), str(runs / "pruned"), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert [r[0] for r in _cells(out.read_text())] == ["teacher", "pruned (unpruned)", "pruned"]
    assert sorted(p.name for p in out.parent.glob("*.png")) == [
        "page_vs_flops.png", "page_vs_latency_ms.png", "page_vs_params.png"]


def test_single_prune_run_report_shows_its_unpruned_baseline(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    page = build_report(runs / "pruned").read_text()
    assert "prune (unpruned)" in page
    assert "FLOPs x0.400, params x0.400, CPU speed-up x2.00, metric change -2.00 points" in page


def test_missing_or_empty_folders_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="has no results.json"):
        find_runs([tmp_path])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no run folder at" in capsys.readouterr().err


def test_runs_inside_another_run_folder_are_not_listed_twice(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    (runs / "pruned" / "stages" / "0").mkdir(parents=True)
    (runs / "pruned" / "stages" / "0" / "results.json").write_text('{"models": []}')
    assert [p.name for p in find_runs([runs, runs / "teacher"])] == ["demo", "pruned", "teacher"]


def test_pareto_front_matches_its_definition_on_random_points() -> None:
    rng = random.Random(0)
    for _ in range(300):
        pts = [(rng.randint(1, 8), rng.randint(0, 8) / 8) for _ in range(rng.randint(1, 9))]

        def dominated(p: tuple[int, float], pts: list[tuple[int, float]] = pts) -> bool:
            return any((c <= p[0] and m > p[1]) or (c < p[0] and m >= p[1]) for c, m in pts)

        front = [pts[i] for i in pareto_front(pts)]
        assert len(front) == len(set(front))
        assert set(front) == {p for p in pts if not dominated(p)}
        assert [c for c, _ in front] == sorted(c for c, _ in front)


def test_a_prune_run_writes_its_unpruned_baseline_to_results(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main(["prune", str(CONFIGS / "digits_prune.yaml"), "--output", str(out), "--quiet",
                 "--set", "schedule.max_steps=2", "--set", "model.width=4", "--set", "model.checkpoint=null",
                 "--set", "recover=null"]) == 0
    entry = json.loads((out / "results.json").read_text())["models"][0]
    base = entry["baseline"]
    assert base["flops"] > entry["flops"] and base["params"] > entry["params"]
    assert {"accuracy", "latency_ms", "size_bytes", "name"} <= set(base)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine")
def test_comparison_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page as a browser shows it: the rendered DOM holds the table (a row per model) and the three
    plots as decoded images, and the screenshot shows them (coloured plot markers, not a blank page)."""
    import matplotlib.image

    page = build_comparison([_runs(tmp_path)])
    chromium = [str(_chromium()), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*chromium, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert [r[0] for r in _cells(dom)] == ["demo/student", "demo/big", "pruned (unpruned)", "pruned", "teacher"]
    assert dom.count('src="data:image/png;base64,') == 3
    for key in ("flops", "params", "latency_ms"):
        assert f'alt="report_vs_{key}.png"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*chromium, f"--screenshot={shot}", "--window-size=1300,2600", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    assert _png_is_not_blank(shot)
    img = matplotlib.image.imread(shot)[..., :3]
    assert img.shape[:2] == (2600, 1300)
    saturation = img.max(-1) - img.min(-1)  # text and table borders are grey; plot markers are coloured
    coloured_rows = (saturation > 0.3).any(1).nonzero()[0]
    assert len(coloured_rows) > 200  # the plots were drawn, not broken-image icons
    assert coloured_rows.min() > 200  # below the title and table, where the page puts the plots
