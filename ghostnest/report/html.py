"""``DIR/index.html``: the report as one self-contained page (no script, no network; its images lie beside it).

Sections, each a ``<section>`` with a heading and content (the browser check, :mod:`.browser`, fails on an empty
one): the results tables against the papers, Figure 7, and per run: a summary, its training curves, per-class
accuracy, the confusion matrix with the most-confused pairs, the worst-classified test images with their class
activation maps, and its recipe (config.yaml). What is missing for a run is said in its section, never left blank.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone

from .paper import PAPER_TABLES

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.2em 3em; color: #1d1d1f; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
h3 { margin-bottom: .4em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: .25em .5em; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 13px; }
.problem { color: #a00000; }
.classes { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: .15em 1.5em;
           font-size: 13px; }
.classes div { display: grid; grid-template-columns: 9em 4.5em 104px auto; align-items: center; gap: .4em; }
.classes .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar { display: inline-block; height: .8em; background: #4a7fc1; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value) -> str:
    return "" if value is None else f"{value:.2f}%"


def _results_tables(rows: dict) -> str:
    parts = []
    for key, table in PAPER_TABLES.items():
        body = []
        for r in rows[key]:
            ours = _pct(r["test_top1"]) if r["comparable"] else (f"({_pct(r['test_top1'])})"
                                                                  if r["test_top1"] is not None else "")
            best = "" if r["best_val_top1"] is None else f"{r['best_val_top1']:.2f}% (ep {r['best_val_epoch']})"
            gfl = "" if r["gflops"] is None else f"{r['gflops']:.2f} @{r['input_size']}"
            run = f'<a href="#run-{_e(r["run"])}">{_e(r["run"])}</a>' if r["run"] else ""
            params = "" if r["params"] is None else f"{r['params'] / 1e6:.2f}M"
            body.append(f"<tr><td>{_e(r['label'])}</td><td><code>{_e(r['model'])}</code></td>"
                        f"<td class=num>{params}</td><td class=num>{r['paper_params_m']:g}M</td>"
                        f"<td class=num>{gfl}</td><td class=num>{ours}</td><td class=num>{r['paper_top1']:.1f}%</td>"
                        f"<td class=num>{best}</td><td>{run}</td><td class=note>{_e('; '.join(r['notes']))}</td></tr>")
        parts.append(
            f"<h3>{_e(table.title)}</h3><p class=note>Paper: {_e(table.source)}.</p>"
            "<table><tr><th>Model</th><th>Ours: model</th><th>Params (ours)</th><th>Params (paper)</th>"
            f"<th>GFLOPs</th><th>Top-1 (ours, test)</th><th>{_e(table.acc_label)}</th>"
            "<th>Best val top-1 (ours)</th><th>Run</th><th>Notes</th></tr>" + "".join(body) + "</table>"
            + (f"<p class=note>{_e(table.note)}</p>" if table.note else ""))
    if rows["other"]:
        body = ""
        for r in rows["other"]:
            params = "" if r["params"] is None else f"{r['params'] / 1e6:.2f}M"
            body += (f"<tr><td><code>{_e(r['model'])}</code></td><td>{_e(r['dataset'])}</td>"
                     f"<td class=num>{params}</td><td class=num>{_pct(r['test_top1'])}</td>"
                     f"<td><a href=\"#run-{_e(r['run'])}\">{_e(r['run'])}</a></td>"
                     f"<td class=note>{_e('; '.join(r['notes']))}</td></tr>")
        parts.append("<h3>Other runs</h3><table><tr><th>Model</th><th>Data set</th><th>Params</th>"
                     "<th>Top-1 (test)</th><th>Run</th><th>Notes</th></tr>" + body + "</table>")
    if rows["unreadable"]:
        body = "".join(f"<tr><td>{_e(r['run_path'])}</td><td class=problem>{_e('; '.join(r['notes']))}</td></tr>"
                       for r in rows["unreadable"])
        parts.append("<h3>Unreadable runs</h3><table><tr><th>Run</th><th>Problem</th></tr>" + body + "</table>")
    parts.append("<p class=note>Accuracies in parentheses come from runs on another data set than the paper's or are "
                 "otherwise not comparable (see Notes); an empty accuracy means no finished run on the paper's data "
                 "set. GFLOPs per image at the paper's input size, a multiply-add counted as 2 FLOPs.</p>")
    return "".join(parts)


def _per_class(analysis: dict) -> str:
    items = sorted(analysis["per_class"].items(), key=lambda kv: (kv[1]["top1"], kv[0]))
    cells = "".join(f"<div><span class=name>{_e(name)}</span><span class=num>{v['top1']:.2f}%</span>"
                    f"<span class=bar style=\"width:{v['top1']:.1f}px\"></span><span class=note>{v['images']} "
                    "images</span></div>" for name, v in items)
    return ("<p class=note>Top-1 on each class's test images (the bar: 100 px = 100%), lowest first.</p>"
            f"<div class=classes>{cells}</div>")


def _confused(analysis: dict, name: str) -> str:
    pairs = analysis["most_confused"]
    table = ("<p class=note>No test image was misclassified.</p>" if not pairs else
             "<table><tr><th>True class</th><th>Predicted as</th><th>Images</th><th>Share of the true class</th></tr>"
             + "".join(f"<tr><td>{_e(p['true'])}</td><td>{_e(p['predicted'])}</td><td class=num>{p['count']}</td>"
                       f"<td class=num>{p['share']:.1f}%</td></tr>" for p in pairs[:10]) + "</table>")
    return (f'<img src="runs/{_e(name)}/confusion.png" alt="confusion matrix of {_e(name)}">'
            f"<h4>Most-confused pairs</h4>{table}")


def _run_section(run, curves: dict, analysis: dict | None) -> str:
    name = run.name
    res = run.results or {}
    summary = [f"<code>{_e(run.model)}</code> on <code>{_e(run.dataset)}</code>",
               f"recipe <code>{_e(run.recipe)}</code>" if run.recipe else ""]
    if run.finished:
        summary.append(f"test top-1 <b>{_pct(res['test_top1'])}</b>, top-5 {_pct(res['test_top5'])} (best epoch "
                       f"{_e(res['best_epoch'])} of {_e(res['epochs'])})")
    else:
        summary.append("<span class=problem>no results yet (unfinished: no results.json)</span>")
    problems = "".join(f"<li class=problem>{_e(p)}</li>" for p in run.problems)
    parts = [f'<section id="run-{_e(name)}" class=run><h2>Run {_e(name)}</h2><p>{", ".join(s for s in summary if s)}'
             f"</p><p class=note>{_e(run.path)}</p>" + (f"<ul>{problems}</ul>" if problems else "")]
    curve = curves.get(name)
    parts.append("<section><h3>Training curves</h3>" + (
        f'<img src="{_e(curve)}" alt="training curves of {_e(name)}">' if curve else
        "<p class=problem>No curves: metrics.csv has no readable epochs.</p>") + "</section>")
    if analysis is None or "problem" in analysis:
        why = "not analysed (--no-eval)" if analysis is None else analysis["problem"]
        msg = f"<p class=problem>Not available: {_e(why)}.</p>"
        for title in ("Per-class accuracy", "Confusion matrix", "Worst-classified test images"):
            parts.append(f"<section><h3>{title}</h3>{msg}</section>")
    else:
        parts.append(f"<section><h3>Per-class accuracy</h3>{_per_class(analysis)}</section>")
        parts.append(f"<section><h3>Confusion matrix</h3>{_confused(analysis, name)}</section>")
        parts.append(
            "<section><h3>Worst-classified test images</h3><p class=note>The test images given the lowest "
            f"probability of their true class by {_e(analysis['checkpoint'])}; {_e(analysis['cam_note'])}.</p>"
            f'<img src="runs/{_e(name)}/worst.png" alt="worst-classified test images of {_e(name)}"></section>')
    recipe = (run.path / "config.yaml")
    text = recipe.read_text(errors="replace") if recipe.is_file() else ""
    parts.append("<section><h3>Recipe</h3>" + (
        f"<details><summary>config.yaml, the run's resolved recipe ({len(text.splitlines())} lines)</summary>"
        f"<pre>{_e(text)}</pre></details>" if text.strip() else
                                                "<p class=problem>config.yaml is missing.</p>") + "</section>")
    parts.append("</section>")
    return "".join(parts)


def render_html(rows: dict, runs: list, curves: dict[str, str], analyses: dict[str, dict | None]) -> str:
    """The page's HTML (UTF-8 text)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#run-{_e(r.name)}">{_e(r.name)}</a>' for r in runs)
    run_sections = "".join(_run_section(r, curves, analyses.get(r.name)) for r in runs) or (
        '<section id="runs"><h2>Runs</h2><p>No run directories were given: the papers\' rows only.</p></section>')
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><meta name=viewport "
        "content=\"width=device-width, initial-scale=1\"><title>ghostnest report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>ghostnest report</h1><p class=note>Generated by <code>ghostnest report</code> on {stamp} from "
        f"{len(runs)} run director{'y' if len(runs) == 1 else 'ies'}. table.md and report.json hold the same "
        "numbers.</p><nav><a href=\"#results\">Results</a><a href=\"#figure7\">Figure 7</a>" + nav + "</nav></header>"
        f'<section id="results"><h2>Results against the papers</h2>{_results_tables(rows)}</section>'
        '<section id="figure7"><h2>Figure 7: top-1 against parameters</h2><img src="figure7.png" alt="Figure 7">'
        "<p class=note>The ME-NeSt-Ghost paper's Figure 7, its numbers dashed, ours solid where there are finished "
        "CIFAR-100 runs.</p></section>" + run_sections + "</body></html>\n")
