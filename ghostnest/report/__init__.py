"""Reports: the papers' results tables with our runs beside them, Figure 7, and every run's training curves.

``write_report(run_dirs, out_dir)`` reads run directories written by ``ghostnest train``:

- ``config.yaml``: the resolved config (``model``, ``dataset``, ``num_classes``, ``recipe``, ...);
- ``metrics.csv``: header exactly ``epoch,lr,train_loss,val_loss,val_top1,val_top5,seconds`` (accuracies in %);
- ``results.json``: written when training ends, ``{"model", "dataset", "params", "test_top1", "test_top5",
  "best_epoch", "epochs"}`` (accuracies in %); missing for an unfinished run, which then has no test accuracy;
- ``curves.png``: the trainer's own plot (copied only when metrics.csv cannot be re-plotted).

and writes into ``out_dir``:

- ``table.md``: the ME-NeSt-Ghost paper's Table 5 (CIFAR-100) and the GhostMixNet paper's results table
  (CIFAR-10), one row per paper row (one per run where there are runs), our figures beside the paper's;
- ``figure7.png`` / ``figure7.svg``: top-1 against parameters, one line per family, ours (solid) and the
  paper's (dashed), as the ME-NeSt-Ghost paper's Figure 7;
- ``curves/<run>.png``: each run's loss and accuracy curves, re-plotted from its metrics.csv;
- ``report.json``: the same rows as data;
- ``index.html``: all of it as one page (:mod:`.html`; no script, no network, its images beside it), with per run
  its per-class accuracy, confusion matrix (``runs/<run>/confusion.png``), worst-classified test images with their
  class activation maps (``runs/<run>/worst.png``, :mod:`.analysis`) and its recipe. ``check=True`` then renders
  the page in headless Chromium and fails on a missing image, a script error or an empty section (:mod:`.browser`).

It never invents a number: a model without a finished run still gets its row with parameters and GFLOPs counted
from the registry (on the ``meta`` device) and an empty accuracy. A run whose files are missing or corrupt gets a
row marked ``unreadable`` (or a note saying what is wrong) instead of crashing the report; a run directory that
does not exist at all is a usage error (``ValueError``).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..fileio import atomic_write_text
from ..train.metrics import plot_curves
from . import render
from .analysis import analyse_run
from .html import render_html
from .paper import FAMILY_COLORS, FAMILY_LABELS, PAPER_ROWS, PAPER_TABLES, PaperRow, PaperTable
from .render import build_rows, plot_figure7, registry_stats, render_table
from .runs import RESULTS_KEYS, Run, load_run, mixing

__all__ = ["FAMILY_COLORS", "FAMILY_LABELS", "PAPER_ROWS", "PAPER_TABLES", "RESULTS_KEYS", "PaperRow", "PaperTable",
           "Run", "build_rows", "load_run", "mixing", "plot_figure7", "registry_stats", "render", "render_table",
           "write_report"]


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", run.name) or "run"
        n = seen.get(base, 0)
        seen[base] = n + 1
        run.name = base if n == 0 else f"{base}-{n + 1}"


def write_report(run_dirs: list[str | Path], out_dir: str | Path, analyse: bool = True, device: str = "cpu",
                 check: bool = False) -> dict:
    """Write table.md, figure7.png/.svg, curves/*.png, report.json and index.html (with ``runs/<run>/`` figures
    unless ``analyse`` is false) into ``out_dir``; return the paths. ``check``: render index.html in headless
    Chromium afterwards (``ValueError`` listing what is wrong)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a directory")
    if check:
        from .browser import find_chromium

        if find_chromium() is None:
            raise ValueError("--check needs Chromium (apt-get install -y chromium, or set GHOSTNEST_CHROMIUM to its "
                             "path); nothing was written")
    runs = [load_run(p) for p in run_dirs]
    _unique_names(runs)
    out.mkdir(parents=True, exist_ok=True)
    curves_dir = out / "curves"
    curves: dict[str, str] = {}
    for run in runs:
        target = curves_dir / f"{run.name}.png"
        if run.metrics:
            curves_dir.mkdir(exist_ok=True)
            title = f"{run.name}: {run.model} on {run.dataset or '?'}" + ("" if run.finished else " (unfinished)")
            plot_curves(target, run.metrics, title, test_top1=run.test_top1)
            curves[run.name] = f"curves/{target.name}"
        elif (run.path / "curves.png").is_file():
            curves_dir.mkdir(exist_ok=True)
            shutil.copyfile(run.path / "curves.png", target)
            curves[run.name] = f"curves/{target.name}"
    rows = render.build_rows(runs)
    (out / "table.md").write_text(render_table(rows, curves))
    figs = plot_figure7(rows, out)
    (out / "report.json").write_text(json.dumps(rows, indent=2, default=str))
    analyses: dict[str, dict | None] = {}
    for run in runs:
        analyses[run.name] = analyse_run(run.path, out / "runs" / run.name, device) if analyse else None
    atomic_write_text(out / "index.html", render_html(rows, runs, curves, analyses))
    result = {
        "table": out / "table.md",
        "figures": figs,
        "curves": [out / c for c in curves.values()],
        "json": out / "report.json",
        "html": out / "index.html",
        "runs": len(runs),
        "problems": {r.name: r.problems for r in runs if r.problems},
        "no_results": [r.name for r in runs if not r.finished and r.model is not None],
        "analysis_problems": {k: v["problem"] for k, v in analyses.items() if v and "problem" in v},
    }
    if check:
        from .browser import check_page

        problems = check_page(out / "index.html")
        if problems:
            raise ValueError(f"{out / 'index.html'} does not render cleanly in Chromium: {'; '.join(problems)}")
    return result
