"""Rendering a report: table rows as data, table.md and the ME-NeSt-Ghost paper's Figure 7."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from .paper import (
    FAMILY_COLORS,
    FAMILY_LABELS,
    FUTURE_QUESTIONS,
    FUTURE_ROWS,
    PAPER_ROWS,
    PAPER_TABLES,
    PaperRow,
    PaperTable,
    norm_dataset,
)
from .runs import Run, mixing


@functools.lru_cache(maxsize=None)
def registry_stats(model: str, num_classes: int | None = None) -> dict | None:
    """Parameters and GFLOPs of a registered model at its paper input size, counted on meta (None if unknown)."""
    from ..registry import list_models
    from ..stats import model_stats

    if model not in list_models():
        return None
    try:
        return model_stats(model, num_classes=num_classes)
    except Exception:  # noqa: BLE001  (a model that cannot be built on meta must not sink the report)
        return None


# The function the report counts parameters and FLOPs with; tests may swap in a faster one.
_stats = registry_stats


def _fmt_m(params: float | None) -> str:
    return "" if params is None else f"{params / 1e6:.2f}M"


def _fmt_pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}%"


def _assign(runs: list[Run]) -> tuple[dict, list[Run]]:
    """Runs per paper row (by model, and for GhostMixNet by CutMix/Mixup) and the runs no paper row takes."""
    by_row: dict[PaperRow, list[Run]] = {row: [] for row in PAPER_ROWS}
    others = []
    for run in runs:
        rows = [r for r in PAPER_ROWS if r.model == run.model]
        if len(rows) > 1:  # ghostmixnet: with or without CutMix/Mixup
            mixed = mixing(run.config)
            if mixed is None:
                run.notes.append("config says nothing about CutMix/Mixup: placed beside the paper's mixing row")
                mixed = True
            rows = [r for r in rows if r.mixing == mixed]
        if rows:
            by_row[rows[0]].append(run)
        else:
            others.append(run)
    return by_row, others


def _run_cells(run: Run, table: PaperTable | None) -> dict:
    notes = [f"**problem**: {p}" for p in run.problems] + list(run.notes)
    comparable = True
    if table is not None and run.dataset is not None and norm_dataset(run.dataset) != table.dataset:
        comparable = False
        notes.append(f"trained on {run.dataset!r}, not {table.dataset_label}: not comparable with the paper")
    if table is not None and run.dataset is None:
        comparable = False
        notes.append("data set unknown: not comparable with the paper")
    kwargs = run.config.get("model_kwargs")
    if isinstance(kwargs, dict) and kwargs:
        notes.append(f"model built with model_kwargs {json.dumps(kwargs, sort_keys=True)}, not the registered "
                     "default (GFLOPs and paper columns are for the default)")
    if not run.finished:
        if any(p.startswith("results.json") for p in run.problems):
            notes.append("no usable test accuracy")
        elif run.metrics:
            notes.append(f"unfinished (no results.json; {run.metrics[-1]['epoch']} epoch(s) logged): no test accuracy")
        else:
            notes.append("unfinished (no results.json): no test accuracy")
    best = run.best_val
    stats = None if run.results else (_stats(run.model, run.num_classes) if run.model else None)
    params = run.results["params"] if run.results else (stats["params"] if stats else None)
    return {
        "run": run.name,
        "run_path": str(run.path),
        "dataset": run.dataset,
        "recipe": run.recipe,
        "params": params,
        "test_top1": run.test_top1,
        "test_top5": run.results["test_top5"] if run.results else None,
        "best_val_top1": best[0] if best else None,
        "best_val_epoch": best[1] if best else None,
        "comparable": comparable and run.finished,
        "notes": notes,
        "unreadable": run.model is None,
    }


def build_rows(runs: list[Run]) -> dict:
    """All table rows as data: ``{table_key: [row, ...], "future": [...], "other": [...], "unreadable": [...]}``."""
    by_row, others = _assign([r for r in runs if r.model is not None])
    stats_cache: dict[str, dict | None] = {}
    out: dict[str, list] = {key: [] for key in PAPER_TABLES}
    for prow in PAPER_ROWS:
        table = PAPER_TABLES[prow.table]
        if prow.model not in stats_cache:
            stats_cache[prow.model] = _stats(prow.model)
        stats = stats_cache[prow.model]
        base = {
            "label": prow.label,
            "model": prow.model,
            "family": _family(prow.model),
            "paper_params_m": prow.params_m,
            "paper_top1": prow.top1,
            "registry_params": stats["params"] if stats else None,
            "gflops": stats["gflops"] if stats else None,
            "input_size": stats["input_size"] if stats else None,
            "in_registry": stats is not None,
        }
        runs_here = by_row[prow]
        if not runs_here:
            out[prow.table].append({**base, "run": None, "params": base["registry_params"], "test_top1": None,
                                    "test_top5": None, "best_val_top1": None, "best_val_epoch": None,
                                    "comparable": False, "dataset": None, "recipe": None,
                                    "notes": [] if stats else ["not in the registry: no parameter count"]})
        for run in runs_here:
            out[prow.table].append({**base, **_run_cells(run, table)})
    future_models = {f.model for f in FUTURE_ROWS}
    out["future"] = _future_rows([r for r in others if r.model in future_models])
    out["other"] = []
    for run in (r for r in others if r.model not in future_models):
        stats = _stats(run.model)
        out["other"].append({"label": run.model, "model": run.model, "family": _family(run.model),
                             "gflops": stats["gflops"] if stats else None, **_run_cells(run, None)})
    out["unreadable"] = [{"run": r.name, "run_path": str(r.path), "notes": r.problems} for r in runs if r.model is None]
    return out


def _future_rows(runs: list[Run]) -> list[dict]:
    """The future-work group (ME-NeSt-Ghost, section 6): one row per model, one per run where there are runs, set
    against the ME-NeSt-Ghost size each is matched to; comparable where trained on Table 5's data set."""
    table = PAPER_TABLES["menest"]
    rows = []
    for f in FUTURE_ROWS:
        stats, ref = _stats(f.model), _stats(f.compare)
        base = {"question": f.question, "label": f.label, "model": f.model, "family": _family(f.model),
                "compare": f.compare, "registry_params": stats["params"] if stats else None,
                "compare_params": ref["params"] if ref else None, "gflops": stats["gflops"] if stats else None,
                "input_size": stats["input_size"] if stats else None}
        mine = [r for r in runs if r.model == f.model]
        if not mine:
            rows.append({**base, "run": None, "params": base["registry_params"], "test_top1": None, "test_top5": None,
                         "best_val_top1": None, "best_val_epoch": None, "comparable": False, "dataset": None,
                         "recipe": None, "notes": [] if stats else ["not in the registry: no parameter count"]})
        rows += [{**base, **_run_cells(run, table)} for run in mine]
    return rows


def _family(model: str) -> str | None:
    from ..registry import list_models, model_info

    return model_info(model).family if model in list_models() else None


# ------------------------------------------------------------------------------------------------- markdown
def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_table(rows: dict, curves: dict[str, str]) -> str:
    lines = ["# Results against the papers", ""]
    lines.append(
        "Generated by `ghostnest report`. Paper columns are the numbers printed in the papers; *ours* are read from "
        "the run directories given. An empty accuracy cell means there is no finished run on the paper's data set "
        "for that model: nothing is filled in. Parameters without a run are counted from the registry at the "
        "paper's class count; GFLOPs are per image at the paper's input size (multiply-add = 2 FLOPs), counted on "
        "PyTorch's `meta` device."
    )
    for key, table in PAPER_TABLES.items():
        lines += ["", f"## {table.title}", "", f"Paper: {table.source}.", ""]
        lines.append(
            f"| Model | Ours: model | Params (ours) | Params (paper) | GFLOPs | Top-1 (ours, test) | {table.acc_label} "
            "| Best val top-1 (ours, epoch) | Run | Notes |"
        )
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for r in rows[key]:
            gfl = "" if r["gflops"] is None else f"{r['gflops']:.2f} @{r['input_size']}"
            ours = _fmt_pct(r["test_top1"]) if r["comparable"] else (
                f"({_fmt_pct(r['test_top1'])})" if r["test_top1"] is not None else "")
            best = "" if r["best_val_top1"] is None else f"{r['best_val_top1']:.2f}% (ep {r['best_val_epoch']})"
            run = ""
            if r["run"]:
                run = f"[{r['run']}]({curves[r['run']]})" if r["run"] in curves else _md_escape(r["run"])
            lines.append(
                f"| {_md_escape(r['label'])} | `{r['model']}` | {_fmt_m(r['params'])} | {r['paper_params_m']:g}M "
                f"| {gfl} | {ours} | {r['paper_top1']:.1f}% | {best} | {run} | {_md_escape('; '.join(r['notes']))} |"
            )
        if table.note:
            lines += ["", table.note]
    lines += [
        "",
        "Accuracies in parentheses are from runs on another data set than the paper's, or are otherwise not "
        "comparable (see Notes); they are never plotted beside the paper's.",
    ]
    if rows.get("future"):
        lines += ["", "## Future work (ME-NeSt-Ghost, section 6): not part of Table 5", "",
                  "The experiments the paper proposes and did not run, trained with the same `menest-cifar100` recipe "
                  "(docs/training.md). There are no paper numbers; each model is set against the ME-NeSt-Ghost size "
                  "it is matched to.", "",
                  "| Question | Model | Ours: model | Params (ours) | vs ME-NeSt-Ghost | GFLOPs | Top-1 (ours, test) "
                  "| Best val top-1 (ours, epoch) | Run | Notes |",
                  "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
        for r in rows["future"]:
            gfl = "" if r["gflops"] is None else f"{r['gflops']:.2f} @{r['input_size']}"
            vs = "" if not (r["registry_params"] and r["compare_params"]) else (  # both at the paper's 100 classes
                f"{r['registry_params'] / r['compare_params'] - 1:+.1%} of `{r['compare']}`")
            ours = _fmt_pct(r["test_top1"]) if r["comparable"] else (
                f"({_fmt_pct(r['test_top1'])})" if r["test_top1"] is not None else "")
            best = "" if r["best_val_top1"] is None else f"{r['best_val_top1']:.2f}% (ep {r['best_val_epoch']})"
            run = ""
            if r["run"]:
                run = f"[{r['run']}]({curves[r['run']]})" if r["run"] in curves else _md_escape(r["run"])
            lines.append(
                f"| {r['question']}: {_md_escape(FUTURE_QUESTIONS[r['question']])} | {_md_escape(r['label'])} "
                f"| `{r['model']}` | {_fmt_m(r['params'])} | {vs} | {gfl} | {ours} | {best} | {run} "
                f"| {_md_escape('; '.join(r['notes']))} |")
    if rows["other"]:
        lines += ["", "## Other runs", "", "| Model | Params | GFLOPs | Data set | Top-1 (test) | Best val top-1 | Run | Notes |",
                  "| --- | ---: | ---: | --- | ---: | ---: | --- | --- |"]
        for r in rows["other"]:
            best = "" if r["best_val_top1"] is None else f"{r['best_val_top1']:.2f}% (ep {r['best_val_epoch']})"
            run = f"[{r['run']}]({curves[r['run']]})" if r["run"] in curves else _md_escape(r["run"])
            gfl = "" if r["gflops"] is None else f"{r['gflops']:.2f}"
            lines.append(
                f"| `{_md_escape(r['model'])}` | {_fmt_m(r['params'])} | {gfl} | {_md_escape(r['dataset'] or '')} "
                f"| {_fmt_pct(r['test_top1'])} | {best} | {run} | {_md_escape('; '.join(r['notes']))} |"
            )
    if rows["unreadable"]:
        lines += ["", "## Unreadable runs", "", "| Run | Problem |", "| --- | --- |"]
        for r in rows["unreadable"]:
            lines.append(f"| {_md_escape(r['run_path'])} | **unreadable**: {_md_escape('; '.join(r['notes']))} |")
    lines += ["", "## Figure 7", "", "![Top-1 against parameters](figure7.png)", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- figures
def plot_figure7(rows: dict, out_dir: Path) -> list[Path]:
    """Top-1 against parameters for the families of Table 5: paper dashed, ours solid (mean per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = PAPER_TABLES["menest"]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    have_ours = False
    for fam in table.families:
        color = FAMILY_COLORS.get(fam, None)
        label = FAMILY_LABELS.get(fam, fam)
        paper = sorted({(r["paper_params_m"], r["paper_top1"], r["model"].rsplit("_", 1)[-1].upper())
                        for r in rows["menest"]
                        if r["family"] == fam or (r["family"] is None and _paper_family(r["model"]) == fam)})
        if paper:
            ax.plot([p[0] for p in paper], [p[1] for p in paper], "--o", color=color, mfc="white",
                    label=f"{label} (paper)")
            for p_m, acc, size in paper:
                ax.annotate(size, (p_m, acc), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7,
                            color=color)
        per_model: dict[str, list] = {}
        for r in rows["menest"]:
            if r["family"] == fam and r["comparable"] and r["test_top1"] is not None and r["params"]:
                per_model.setdefault(r["model"], []).append((r["params"] / 1e6, r["test_top1"]))
        ours = sorted(
            (sum(p for p, _ in v) / len(v), sum(a for _, a in v) / len(v)) for v in per_model.values()
        )
        if ours:
            have_ours = True
            ax.plot([p for p, _ in ours], [a for _, a in ours], "-o", color=color, label=f"{label} (ours)")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel(f"top-1 accuracy on the {table.dataset_label} test set (%)")
    title = "Top-1 accuracy against parameter count (ME-NeSt-Ghost paper, Figure 7)"
    if not have_ours:
        title += f"\nno finished {table.dataset_label} runs given: the paper's numbers only"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "figure7.png", out_dir / "figure7.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _paper_family(model: str) -> str:
    return "menest" if model.startswith("menest") else "efficientnetv2" if model.startswith("efficientnet") else ""
