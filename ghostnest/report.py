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
- ``report.json``: the same rows as data.

It never invents a number: a model without a finished run still gets its row with parameters and GFLOPs counted
from the registry (on the ``meta`` device) and an empty accuracy. A run whose files are missing or corrupt gets a
row marked ``unreadable`` (or a note saying what is wrong) instead of crashing the report; a run directory that
does not exist at all is a usage error (``ValueError``).
"""
from __future__ import annotations

import csv
import functools
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

METRICS_HEADER = ["epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "seconds"]
RESULTS_KEYS = ("model", "dataset", "params", "test_top1", "test_top5", "best_epoch", "epochs")


# ----------------------------------------------------------------------------------------- the papers' numbers
@dataclass(frozen=True)
class PaperRow:
    """One row of a paper's results table, as printed there."""

    table: str  # key of PAPER_TABLES
    label: str  # the row's name in the paper
    model: str  # our registry name for that model
    params_m: float  # parameters the paper reports, millions
    top1: float  # accuracy the paper reports, percent
    mixing: bool | None = None  # GhostMixNet rows: trained with CutMix/Mixup (None: not a distinction)


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    source: str
    dataset: str  # normalised data set name the paper used (see _norm_dataset)
    dataset_label: str
    acc_label: str  # what the paper's accuracy column measures
    families: tuple[str, ...]
    note: str = ""


# All reported numbers live here and nowhere else.
PAPER_TABLES = {
    "menest": PaperTable(
        key="menest",
        title="ME-NeSt-Ghost vs EfficientNet-V2 on CIFAR-100",
        source="seed 000 (ME-NeSt-Ghost), Table 5: top-1 accuracy on the CIFAR-100 test set, 128x128 images",
        dataset="cifar100",
        dataset_label="CIFAR-100",
        acc_label="Top-1 (paper)",
        families=("menest", "efficientnetv2"),
        note=(
            "The paper trained on CIFAR-100 super-resolved to 128x128 with the CAI neural API (seed 000, section 2). "
            "`ghostnest train`'s `cifar100_128` is CIFAR-100 upsampled bicubically instead (that set is not "
            "available here), so part of any gap can come from the data alone. Both are scored on the CIFAR-100 "
            "test set, so such runs are set beside the paper's numbers."
        ),
    ),
    "ghostmixnet": PaperTable(
        key="ghostmixnet",
        title="GhostMixNet and its ablations on CIFAR-10",
        source="seed 004 (GhostMixNet), results table: 'Val Acc.', 32x32 images",
        dataset="cifar10",
        dataset_label="CIFAR-10",
        acc_label="Val Acc. (paper)",
        families=("ghostmixnet",),
        note=(
            "The GhostMixNet paper's 'Val Acc.' is accuracy on CIFAR-10's official 10,000-image test set (its "
            "published code uses that set for validation), so it is set beside our *test* top-1. Its 'Test Acc.' "
            "column is on a course competition's private images and is not reproduced."
        ),
    ),
}

PAPER_ROWS = (
    PaperRow("menest", "ME-NeSt-Ghost-S", "menest_ghost_s", 21, 80.3),
    PaperRow("menest", "EffNet-V2-S", "efficientnetv2_s", 20, 79.6),
    PaperRow("menest", "ME-NeSt-Ghost-M", "menest_ghost_m", 51, 80.8),
    PaperRow("menest", "EffNet-V2-M", "efficientnetv2_m", 53, 80.4),
    PaperRow("menest", "ME-NeSt-Ghost-L", "menest_ghost_l", 102, 81.2),
    PaperRow("menest", "EffNet-V2-L", "efficientnetv2_l", 117, 80.7),
    PaperRow("menest", "ME-NeSt-Ghost-XL", "menest_ghost_xl", 172, 81.7),
    PaperRow("menest", "EffNet-V2-XL", "efficientnetv2_xl", 207, 81.4),
    PaperRow("ghostmixnet", "ResNet", "ghostmixnet_resnet", 4.6, 91.4),
    PaperRow("ghostmixnet", "ResNet+SE+Image Transforms", "ghostmixnet_resnet_se", 4.9, 94.3),
    PaperRow("ghostmixnet", "GhostNet+SE+Image Transforms", "ghostmixnet", 3.0, 95.1, mixing=False),
    PaperRow("ghostmixnet", "GhostNet+SE+Image Transforms+CutMix/Mixup", "ghostmixnet", 3.0, 95.5, mixing=True),
)

FAMILY_LABELS = {"menest": "ME-NeSt-Ghost", "efficientnetv2": "EfficientNet-V2", "ghostmixnet": "GhostMixNet"}
FAMILY_COLORS = {"menest": "tab:red", "efficientnetv2": "tab:blue", "ghostmixnet": "tab:green"}


# ------------------------------------------------------------------------------------------------ reading runs
@dataclass
class Run:
    """What could be read from one run directory; ``problems`` says what could not."""

    path: Path
    name: str = ""
    model: str | None = None
    dataset: str | None = None
    num_classes: int | None = None
    recipe: str | None = None
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    results: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def test_top1(self) -> float | None:
        return self.results["test_top1"] if self.results else None

    @property
    def best_val(self) -> tuple[float, int] | None:
        """Best val top-1 in metrics.csv and its epoch (None without readable val accuracies)."""
        vals = [(m["val_top1"], m["epoch"]) for m in self.metrics if m["val_top1"] is not None]
        return max(vals, key=lambda v: (v[0], -v[1])) if vals else None  # earliest epoch on a tie


def _norm_dataset(name: str | None) -> str:
    """'CIFAR-100', 'cifar100_128', 'cifar_100' -> 'cifar100'; anything else lower-cased without punctuation."""
    s = re.sub(r"[^a-z0-9]", "", str(name or "").lower())
    for known in ("cifar100", "cifar10"):
        if s.startswith(known):
            return known
    return s


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _read_config(run: Run) -> None:
    import yaml

    path = run.path / "config.yaml"
    if not path.is_file():
        run.problems.append("config.yaml missing")
        return
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        run.problems.append(f"config.yaml is not valid YAML ({str(exc).splitlines()[0]})")
        return
    if not isinstance(cfg, dict):
        run.problems.append("config.yaml is not a mapping")
        return
    run.config = cfg
    run.model = cfg.get("model") if isinstance(cfg.get("model"), str) else None
    if isinstance(cfg.get("model"), dict):  # tolerate a nested {model: {name: ...}}
        run.model = cfg["model"].get("name")
    data = cfg.get("dataset")
    run.dataset = data.get("name") if isinstance(data, dict) else data
    nc = cfg.get("num_classes")
    run.num_classes = nc if isinstance(nc, int) and not isinstance(nc, bool) else None
    recipe = cfg.get("recipe")
    run.recipe = recipe.get("name") if isinstance(recipe, dict) else recipe
    if run.model is None:
        run.problems.append("config.yaml names no model")


def _read_metrics(run: Run) -> None:
    path = run.path / "metrics.csv"
    if not path.is_file():
        run.problems.append("metrics.csv missing")
        return
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        run.problems.append(f"metrics.csv unreadable ({exc})")
        return
    if not rows or [h.strip() for h in rows[0]] != METRICS_HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        run.problems.append(f"metrics.csv header is {got!r}, expected {','.join(METRICS_HEADER)!r}")
        return
    parsed = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(METRICS_HEADER):
            run.problems.append(f"metrics.csv line {lineno} has {len(row)} fields, expected {len(METRICS_HEADER)}")
            return
        rec = {}
        try:
            for key, text in zip(METRICS_HEADER, row):
                text = text.strip()
                if text == "" and key != "epoch":
                    rec[key] = None  # e.g. an epoch without validation
                    continue
                value = float(text)
                if not math.isfinite(value) and key in ("epoch", "val_top1", "val_top5"):
                    raise ValueError(text)
                rec[key] = value
        except ValueError:
            run.problems.append(f"metrics.csv line {lineno}: {key}={text!r} is not a number")
            return
        rec["epoch"] = int(rec["epoch"])
        for key in ("val_top1", "val_top5"):
            if rec[key] is not None and not 0 <= rec[key] <= 100:
                run.problems.append(f"metrics.csv line {lineno}: {key}={rec[key]} is not a percentage")
                return
        parsed.append(rec)
    if not parsed:
        run.problems.append("metrics.csv has no epochs yet")
    run.metrics = parsed


def _read_results(run: Run) -> None:
    path = run.path / "results.json"
    if not path.is_file():
        return  # unfinished run: no test accuracy, said in the table
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in RESULTS_KEYS if k not in res]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        for key in ("test_top1", "test_top5"):
            if not 0 <= _number(res[key], key) <= 100:
                raise ValueError(f"{key}={res[key]} is not a percentage")
        _number(res["params"], "params")
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        run.problems.append(f"results.json unusable ({str(exc).splitlines()[0]})")
        return
    run.results = res
    if run.model is None and isinstance(res["model"], str):
        run.model = res["model"]
    elif run.model is not None and res["model"] != run.model:
        run.problems.append(f"results.json is for model {res['model']!r}, config.yaml for {run.model!r}")
    if run.dataset is None and isinstance(res["dataset"], str):
        run.dataset = res["dataset"]


def load_run(path: str | Path) -> Run:
    """Read one run directory; what is missing or corrupt is listed in ``Run.problems``, never raised."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run directory {str(path)!r} does not exist; pass directories written by `ghostnest train`")
    run = Run(path=path, name=path.resolve().name)
    _read_config(run)
    _read_metrics(run)
    _read_results(run)
    return run


def _mixing(config: dict) -> bool | None:
    """Whether a resolved config trains with CutMix/Mixup: True/False, or None if it does not say.

    Reads every setting whose key path names mixup or cutmix (or a mixing probability). Alphas decide first
    (``mixup_alpha``/``cutmix_alpha``: 0 means off, as in ``ghostnest train`` and timm), vetoed by a mixing
    probability (``*prob*``) of 0; without alphas a probability decides, then plain flags. ``mixup_p`` (MixUp's
    share when both are on) says nothing about whether batches are mixed at all.
    """
    alphas: list[bool] = []
    probs: list[bool] = []
    flags: list[bool] = []

    def leaf(value) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value > 0
        if value is None or str(value).strip().lower() in ("", "none", "off", "false", "no", "0"):
            return False
        return None

    def walk(node, key_path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key_path}.{str(k).lower()}")
            return
        if not re.search(r"mixup|cutmix|mix_prob|mixing", key_path):
            return
        value = leaf(node)
        if value is None:
            return
        last = key_path.rsplit(".", 1)[-1]
        if "alpha" in key_path:
            alphas.append(value)
        elif "prob" in last:
            probs.append(value)
        elif not re.search(r"mixup_p$", last):
            flags.append(value)

    walk(config, "")
    if alphas:
        return any(alphas) and (not probs or any(probs))
    if probs:
        return any(probs)
    if flags:
        return any(flags)
    return None


# ----------------------------------------------------------------------------------------------- table rows
@functools.lru_cache(maxsize=None)
def registry_stats(model: str, num_classes: int | None = None) -> dict | None:
    """Parameters and GFLOPs of a registered model at its paper input size, counted on meta (None if unknown)."""
    from .registry import list_models
    from .stats import model_stats

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
            mixing = _mixing(run.config)
            if mixing is None:
                run.notes.append("config says nothing about CutMix/Mixup: placed beside the paper's mixing row")
                mixing = True
            rows = [r for r in rows if r.mixing == mixing]
        if rows:
            by_row[rows[0]].append(run)
        else:
            others.append(run)
    return by_row, others


def _run_cells(run: Run, table: PaperTable | None) -> dict:
    notes = [f"**problem**: {p}" for p in run.problems] + list(run.notes)
    comparable = True
    if table is not None and run.dataset is not None and _norm_dataset(run.dataset) != table.dataset:
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
    """All table rows as data: ``{table_key: [row, ...], "other": [...], "unreadable": [...]}``."""
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
    out["other"] = []
    for run in others:
        stats = _stats(run.model)
        out["other"].append({"label": run.model, "model": run.model, "family": _family(run.model),
                             "gflops": stats["gflops"] if stats else None, **_run_cells(run, None)})
    out["unreadable"] = [{"run": r.name, "run_path": str(r.path), "notes": r.problems} for r in runs if r.model is None]
    return out


def _family(model: str) -> str | None:
    from .registry import list_models, model_info

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


def plot_curves(run: Run, path: Path) -> None:
    """Loss and accuracy against epoch from a run's metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [m["epoch"] for m in run.metrics]

    def series(key):
        pts = [(m["epoch"], m[key]) for m in run.metrics if m[key] is not None]
        return [p for p, _ in pts], [v for _, v in pts]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        xs, ys = series(key)
        if xs:
            ax1.plot(xs, ys, style, marker="." if len(ep) < 30 else None, label=key.replace("_", " "))
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for key in ("val_top1", "val_top5"):
        xs, ys = series(key)
        if xs:
            ax2.plot(xs, ys, marker="." if len(ep) < 30 else None, label=key.replace("_", " "))
    if run.results:
        ax2.axhline(run.results["test_top1"], color="k", lw=0.8, ls=":", label="test top1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{run.name}: {run.model} on {run.dataset or '?'}" + ("" if run.finished else " (unfinished)"),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ main
def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", run.name) or "run"
        n = seen.get(base, 0)
        seen[base] = n + 1
        run.name = base if n == 0 else f"{base}-{n + 1}"


def write_report(run_dirs: list[str | Path], out_dir: str | Path) -> dict:
    """Write table.md, figure7.png/.svg, curves/*.png and report.json into ``out_dir``; return the paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a directory")
    runs = [load_run(p) for p in run_dirs]
    _unique_names(runs)
    out.mkdir(parents=True, exist_ok=True)
    curves_dir = out / "curves"
    curves: dict[str, str] = {}
    for run in runs:
        target = curves_dir / f"{run.name}.png"
        if run.metrics:
            curves_dir.mkdir(exist_ok=True)
            plot_curves(run, target)
            curves[run.name] = f"curves/{target.name}"
        elif (run.path / "curves.png").is_file():
            curves_dir.mkdir(exist_ok=True)
            shutil.copyfile(run.path / "curves.png", target)
            curves[run.name] = f"curves/{target.name}"
    rows = build_rows(runs)
    (out / "table.md").write_text(render_table(rows, curves))
    figs = plot_figure7(rows, out)
    (out / "report.json").write_text(json.dumps(rows, indent=2, default=str))
    return {
        "table": out / "table.md",
        "figures": figs,
        "curves": [out / c for c in curves.values()],
        "json": out / "report.json",
        "runs": len(runs),
        "problems": {r.name: r.problems for r in runs if r.problems},
    }
