"""Regenerate docs/benchmarks.md: inference and training-step speed of every GhostMixNet and ME-NeSt-Ghost model
against EfficientNet-V2 at the papers' resolutions, plus a chart of the latency ratios (docs/img/).

    .venv/bin/python benchmarks/run_benchmarks.py                 # CPU tables (about 15-20 min on 2 cores)
    .venv/bin/python benchmarks/run_benchmarks.py --quick         # fewer cells and rounds (a few minutes)
    .venv/bin/python benchmarks/run_benchmarks.py --device cuda --dtype bf16 --batch 128 256   # GPU tables
    .venv/bin/python benchmarks/run_benchmarks.py --render-only   # rebuild the doc from the saved results

Every cell is one call of :func:`ghostnest.bench.bench_models`: its models are timed interleaved in this process,
EfficientNet-V2 first, so each row's ratio is its median latency over EfficientNet-V2's. Results are saved per
device and dtype in ``benchmarks/results/<device>-<dtype>.json`` (one file per setting, replaced by a new run of
that setting), and the doc is rendered from all saved files, so a GPU run adds its tables beside the CPU ones.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # cell_records

from cell_records import Ctx, Record, write_json  # noqa: E402

from ghostnest.bench import bench_models, environment  # noqa: E402
from ghostnest.registry import list_models  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
IMG_DIR = ROOT / "docs" / "img"
SIZES = ("s", "m", "l", "xl")
PAPER_RATIO = (4.0, 6.0)  # ME-NeSt-Ghost paper, section 6: its inference time is about 4-6x EfficientNet-V2's


def menest_pairs() -> list[tuple[str, str, str]]:
    """(size, EfficientNet-V2 name, ME-NeSt-Ghost name) for every size both families have in the registry."""
    eff = {n.rsplit("_", 1)[-1]: n for n in list_models(family="efficientnetv2")}
    ours = {n.rsplit("_", 1)[-1]: n for n in list_models(family="menest")}
    return [(s, eff[s], ours[s]) for s in SIZES if s in eff and s in ours]


def plan_cells(device: str, quick: bool, batches: list[int] | None) -> list[dict]:
    """Every cell: models (EfficientNet-V2 first), mode, input, batch, rounds; or a reason it is skipped.

    CPU defaults (1 torch thread) are chosen so that the whole run takes about 15-20 minutes on 2 shared cores:
    batch 8 where a step takes seconds, smaller batches for L/XL at 256 and for their training steps. The cells
    are ordered by importance, so when ``--budget-min`` runs out it is the L/XL training steps that are skipped.
    ``batches`` (e.g. ``--batch 128 256`` on a GPU) runs every cell at each of those batch sizes instead.
    """
    gmn = list_models(family="ghostmixnet")
    pairs = menest_pairs()
    if device == "cpu" and not batches:
        rep = {"infer": 3, "train": 2} if quick else {"infer": 7, "train": 3}
        gm_batches = [32]
        plan = [  # (mode, input, {size: batch}) in the order they run
            ("infer", 128, {"s": 8, "m": 8, "l": 8, "xl": 8}),
            ("infer", 256, {"s": 8, "m": 8, "l": 4, "xl": 4}),
            ("train", 128, {"s": 8, "m": 8}),
            ("train", 256, {"s": 4, "m": 4}),
            ("train", 128, {"l": 4, "xl": 4}),
            ("train", 256, {"l": 2, "xl": 2}),
        ]
        if quick:
            plan = [("infer", 128, {"s": 8, "m": 8, "l": 2, "xl": 2}), ("infer", 256, {"s": 2, "m": 2}),
                    ("train", 128, {"s": 8})]
    else:
        rep = {"infer": 5, "train": 3} if quick else {"infer": 20, "train": 10}
        gm_batches = batches or [128]
        plan = [(mode, res, {s: batches or [128] for s in SIZES}) for mode in ("infer", "train") for res in (128, 256)]

    cells = []

    def add(mode, models, size, batch, key, family):
        for b in batch if isinstance(batch, list) else [batch]:
            cells.append(dict(id=f"{mode}-{key}-{size}-b{b}", mode=mode, models=models, input=size, batch=b,
                              repeats=rep[mode], family=family))

    if gmn:
        for mode in ("infer", "train"):
            add(mode, ["efficientnetv2_s", *gmn], 32, gm_batches, "ghostmixnet", "ghostmixnet")
    planned = set()
    for mode, res, sizes in plan:
        for size, eff, ours in pairs:
            if size in sizes:
                add(mode, [eff, ours], res, sizes[size], size, "menest")
                planned.add((mode, res, size))
    for mode in ("infer", "train"):
        for res in (128, 256):
            for size, eff, ours in pairs:
                if (mode, res, size) not in planned:
                    cells.append(dict(id=f"{mode}-{size}-{res}", mode=mode, models=[eff, ours], input=res,
                                      batch=None, family="menest",
                                      skipped="left out by --quick" if quick else "not in this plan"))
    return cells


# Input pipelines timed alone (`ghostnest bench --data`): recipe, data set stand-in, batches. CIFAR is not on this
# machine, so synthetic images of the stored size stand in for it; the augmentation work per image is the same.
DATA_CELLS = (
    ("ghostmixnet-cifar10", "fake:classes=10,size=32,train=4096", 20),
    ("menest-cifar100", "fake:classes=100,size=128,train=1024", 10),
)


def _git_state() -> dict:
    """The commit measured, and the files under ghostnest/ that differed from it (results of a dirty tree)."""
    import subprocess

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "ghostnest").splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": dirty}


def run(args, results_dir: Path = RESULTS_DIR) -> Path:
    from ghostnest.devices import resolve_device

    device = resolve_device(args.device).type
    if args.threads is None and device == "cpu":
        args.threads = 1  # see the doc: 2 threads on 2 shared cores stall at OpenMP barriers
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)  # for the whole run, so that the recorded environment says so
    cells = plan_cells(device, args.quick, args.batch)
    if args.only:
        cells = [c for c in cells if any(key in c["id"] for key in args.only)]
    key = f"{device}-{args.dtype}" + ("-channels_last" if args.channels_last else "")
    out = results_dir / f"{key}.json"
    if out.is_file() and not args.only:  # keep the previous run of this setting for the repeatability check
        old = json.loads(out.read_text())
        stamp = old.get("env", {}).get("date_utc", "unknown").replace(" UTC", "").replace(" ", "T").replace(":", "")
        (results_dir / "history").mkdir(parents=True, exist_ok=True)
        out.replace(results_dir / "history" / f"{key}-{stamp}.json")
    # one results file, rewritten atomically after every cell (cell_records.Record, as gpu_check's steps)
    ctx = Ctx(device, False, results_dir, DOC, force=True, prefix=key)
    rec = Record(ctx, key, budget_s=args.budget_min * 60, path=out, fresh=True)
    record = rec.data
    record.update(key=key, device=device, dtype=args.dtype, channels_last=args.channels_last,
                  fused_inference=not args.no_fuse, quick=args.quick, env={**environment(device), **_git_state()})
    start = time.time()

    def measure(cell: dict) -> dict:
        print(f"[{time.time() - start:6.0f}s] {cell['id']}: {' vs '.join(cell['models'])}", flush=True)
        rows = bench_models(
            cell["models"], input_size=cell["input"], batch=cell["batch"], mode=cell["mode"], device=device,
            dtype=args.dtype, channels_last=args.channels_last, compile=args.compile, repeats=cell["repeats"],
            warmup=args.warmup, num_classes=10 if cell["family"] == "ghostmixnet" else 100, threads=args.threads,
            fuse=cell["mode"] == "infer" and not args.no_fuse,  # as `ghostnest bench`: fastest inference path
        )
        for r in rows:
            print(f"    {r['name']:<22} median {r['median_ms']:9.1f} ms  x{r['ratio_to_first']:.2f}", flush=True)
        return {**cell, "rows": rows}

    for cell in cells:
        if "skipped" in cell:
            print(f"[skip] {cell['id']}: {cell['skipped']}", flush=True)
            rec.put(cell["id"], cell)
            continue
        # errors such as out of memory are recorded and the other cells go on; a spent budget skips the rest
        rec.cell(cell["id"], lambda c=cell: measure(c), errors=(ValueError, RuntimeError))
    record["cells"] = [_as_listed(cell, record["cells"][cell["id"]], args.budget_min) for cell in cells]
    if not args.no_data and not args.only:
        import os

        from ghostnest.bench import bench_data

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        record["data"] = []
        for recipe, stand_in, n in DATA_CELLS:
            print(f"[{time.time() - start:6.0f}s] data pipeline of {recipe} on {stand_in}", flush=True)
            try:
                from ghostnest.train.config import resolve_config

                workers = min(resolve_config(recipe).workers, cores)
                row = bench_data(recipe, [f"dataset={stand_in}"], batches=n, warmup=2, device=device,
                                 workers=workers)
            except (ValueError, OSError, RuntimeError) as exc:
                row = {"recipe": recipe, "skipped": f"failed: {str(exc).strip().splitlines()[0][:200]}"}
            row["recipe_workers"] = resolve_config(recipe).workers
            record["data"].append(row)
            print(f"    {row.get('images_per_s', 0):.1f} images/s", flush=True)
    record["total_seconds"] = round(time.time() - start, 1)
    record["complete"] = True
    write_json(out, record)
    print(f"wrote {out} in {record['total_seconds']:.0f} s", flush=True)
    return out


def _as_listed(cell: dict, value: dict, budget_min: float) -> dict:
    """A planned cell with what :class:`Record` recorded for it, in the results file's layout: ``rows`` and
    ``seconds``, or ``skipped`` saying why (the time budget, or the error)."""
    if "not_run" in value:
        return {**cell, "skipped": f"time budget of {budget_min:g} min used up before this cell"}
    if "error" in value:
        return {**cell, "skipped": f"failed: {value['error'].split(': ', 1)[-1][:200]}"}
    out = {k: v for k, v in value.items() if k != "cell_s"}
    return {**out, "seconds": value["cell_s"]} if "cell_s" in value else out


def _listed_cells(record: dict) -> list[dict]:
    """The cells of a results file as a list: a finished run's file lists them; a run stopped in the middle left
    them keyed by id (:class:`Record`'s layout while it runs), of which the measured and skipped ones are read."""
    cells = record["cells"]
    if isinstance(cells, dict):
        return [{"id": k, **v} for k, v in cells.items() if "mode" in v]
    return cells


# ------------------------------------------------------------------------------------------------- rendering
def _label(name: str) -> str:
    return f"`{name}`"


def _fmt_ms(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def _cell_table(cells: list[dict], mem_label: str) -> list[str]:
    lines = [
        f"| model | input | batch | params | GFLOPs/img | median ms/batch | IQR ms | min-max ms | images/s | {mem_label} "
        "| x EfficientNet-V2 (median) | (min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells:
        for r in cell["rows"]:
            mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:,.0f}"
            if r is cell["rows"][0]:
                ratio, mratio = "1 (ref.)", "1"
            else:
                ratio, mratio = f"**{r['ratio_to_first']:.2f}**", f"{r.get('min_ratio_to_first', float('nan')):.2f}"
                if _disagree(r):
                    mratio += " (!)"
            lines.append(
                f"| {_label(r['name'])} | {r['input_size']} | {r['batch']} | {r['params'] / 1e6:.2f}M | {r['gflops']:.2f} "
                f"| {_fmt_ms(r['median_ms'])} | {_fmt_ms(r['iqr_ms'])} | {_fmt_ms(r['min_ms'])}-{_fmt_ms(r['max_ms'])} "
                f"| {r['images_per_s']:.1f} | {mem} | {ratio} | {mratio} |"
            )
    return lines


def _disagree(row: dict) -> bool:
    """Median and min ratios more than 25% apart: one model of the cell caught more of the machine's load."""
    m, n = row["ratio_to_first"], row.get("min_ratio_to_first")
    return n is not None and n > 0 and abs(m / n - 1) > 0.25


def _ratio_points(record: dict) -> list[tuple[str, str, int, int, float]]:
    """(mode, size, input, batch, ME-NeSt/EfficientNet ratio) of every measured ME-NeSt pair."""
    pts = []
    for cell in record["cells"]:
        if cell["family"] == "menest" and "rows" in cell:
            size = cell["models"][1].rsplit("_", 1)[-1].upper()
            pts.append((cell["mode"], size, cell["input"], cell["batch"], cell["rows"][1]["ratio_to_first"],
                        cell["rows"][1].get("min_ratio_to_first")))
    return pts


def _findings(rec: dict) -> list[str]:
    """A short reading of one record's ME-NeSt pairs, computed from the numbers (no hand-written figures)."""
    out = []
    for mode, word in (("infer", "inference"), ("train", "a training step")):
        cells = [c for c in rec["cells"] if c["family"] == "menest" and c["mode"] == mode and "rows" in c]
        if not cells:
            continue
        med = [c["rows"][1]["ratio_to_first"] for c in cells]
        mins = [c["rows"][1]["min_ratio_to_first"] for c in cells]
        flops = [c["rows"][1]["gflops"] / c["rows"][0]["gflops"] for c in cells]
        per_flop = [m / f for m, f in zip(mins, flops, strict=True)]
        out.append(
            f"- **{word.capitalize()}**: ME-NeSt-Ghost takes {min(mins):.1f}-{max(mins):.1f}x the time of "
            f"EfficientNet-V2 of the same size (ratio of minima over {len(cells)} size/resolution cells; ratio of "
            f"medians {min(med):.2f}-{max(med):.2f}), while counting {min(flops):.2f}-{max(flops):.2f}x its FLOPs: "
            f"per FLOP it runs {min(per_flop):.1f}-{max(per_flop):.1f}x slower."
        )
    if out:
        infer_cells = [c for c in rec["cells"] if c["family"] == "menest" and c["mode"] == "infer" and "rows" in c]
        top = max((c["rows"][1]["min_ratio_to_first"] for c in infer_cells), default=0)
        verdict = ("inside" if PAPER_RATIO[0] <= top <= PAPER_RATIO[1] else
                   "below" if top < PAPER_RATIO[0] else "above")
        out.append(
            f"- Against the paper's *4-6x* inference time: on this {rec['device'].upper()} the measured inference "
            f"ratio is {verdict} that range (at most {top:.1f}x). The paper's experiments ran on a Tesla P100 GPU, so its "
            "figure is most likely a GPU one, and the GPU tables are the comparable measurement. A likely reason "
            "for the time-per-FLOP gap: the ME-NeSt-Ghost blocks (MixConv depthwise kernels up to 9x9, "
            "Split-Attention, Ghost modules, channel shuffles) are many small, memory-bound operations, which "
            "use hardware less well than dense convolutions (slow depthwise convolutions on accelerators are why "
            "EfficientNet-V2 brought in Fused-MBConv in its early stages)."
        )
        out = ["", "### Reading", ""] + out
    return out


def _repeatability(rec: dict, results_dir: Path) -> list[str]:
    """How much the ME-NeSt/EfficientNet ratios moved against the latest earlier run of the same setting."""
    history = sorted((results_dir / "history").glob(f"{rec['key']}-*.json"))
    if not history:
        return []
    prev = json.loads(history[-1].read_text())
    before = {c["id"]: c["rows"][1] for c in prev["cells"] if c["family"] == "menest" and "rows" in c}
    diffs = []
    for c in rec["cells"]:
        if c["family"] == "menest" and "rows" in c and c["id"] in before:
            now, then = c["rows"][1], before[c["id"]]
            then_min = then.get("min_ratio_to_first") or then["min_ms"] / next(
                x for x in prev["cells"] if x["id"] == c["id"])["rows"][0]["min_ms"]
            diffs.append((abs(now["min_ratio_to_first"] / then_min - 1), abs(now["ratio_to_first"] /
                          then["ratio_to_first"] - 1), c["id"]))
    if not diffs:
        return []
    by_min = sorted(d[0] for d in diffs)
    by_med = sorted(d[1] for d in diffs)
    worst = max(diffs)
    return ["", (
        f"**Repeatability.** Against the previous full run of this setting ({prev['env']['date_utc']}, kept in "
        f"`benchmarks/results/history/`), the ME-NeSt-Ghost / EfficientNet-V2 ratios of the {len(diffs)} common "
        f"cells moved by a median of {100 * by_min[len(by_min) // 2]:.0f}% (ratio of minima; at most "
        f"{100 * worst[0]:.0f}%, cell `{worst[2]}`) and {100 * by_med[len(by_med) // 2]:.0f}% (ratio of medians; "
        f"at most {100 * by_med[-1]:.0f}%). Read single cells, and the ranges above, with that margin."
    )]


def plot_ratios(records: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for rec in records:
        for mode in ("infer", "train"):
            for res in (128, 256):
                pts = [p for p in _ratio_points(rec) if p[0] == mode and p[2] == res]
                if pts:
                    series.append((f"{rec['key']} {mode} @{res}", pts))
    if not series:
        return None
    sizes = [s.upper() for s in SIZES]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (label, pts) in enumerate(series):
        xs = [sizes.index(p[1]) + (i - (len(series) - 1) / 2) * width for p in pts]
        bars = ax.bar(xs, [p[4] for p in pts], width, label=label)
        mins = [(x, p[5]) for x, p in zip(xs, pts, strict=True) if p[5]]
        ax.plot([x for x, _ in mins], [m for _, m in mins], "k_", ms=10, mew=1.5,
                label="ratio of minima" if i == 0 else None)
        for bar, p in zip(bars, pts, strict=True):
            top = max(bar.get_height(), p[5] or 0) + 0.04
            ax.text(bar.get_x() + bar.get_width() / 2, top, f"{p[4]:.1f}\nb{p[3]}", ha="center",
                    va="bottom", fontsize=6)
    ax.axhspan(*PAPER_RATIO, color="grey", alpha=0.15, label="paper: 4-6x (inference)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(sizes)), [f"ME-NeSt-Ghost-{s}\nvs EffNetV2-{s}" for s in sizes], fontsize=8)
    ax.set_ylabel("median latency ratio (ME-NeSt-Ghost / EfficientNet-V2)")
    ax.set_title("How much slower ME-NeSt-Ghost is than EfficientNet-V2 of the same size", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _intro() -> list[str]:
    """The page's opening: what a cell is, how to read the ratios, what each mode and column measures."""
    L = ["# Benchmarks", ""]
    L.append(
        "Generated by `.venv/bin/python benchmarks/run_benchmarks.py` (do not edit by hand: `--render-only` rebuilds "
        "this page from `benchmarks/results/*.json`, and hand-written sections go in `benchmarks/sections/*.md`, "
        "which are included verbatim). Each table cell is one `ghostnest bench` measurement "
        "(`ghostnest.bench.bench_models`): the models of a cell are built in one process, warmed up, then timed "
        "**interleaved** (round robin, the starting model rotating each round) and summarised by the **median** time "
        "per batch with its interquartile range and min-max. The last two columns are the model's median over the "
        "EfficientNet-V2 model's median in the same cell, and the same ratio of the fastest steps (minima): "
        "these are the figures to read, since absolute times move with the machine's load and interleaved ratios "
        "much less."
    )
    L += [
        "",
        "For an ad-hoc comparison run `ghostnest bench MODEL [MODEL ...]` (same measurement, any models, sizes, "
        "batch, `--mode train`, `--dtype bf16`, `--json`); for a recipe's input pipeline alone, `ghostnest bench "
        "--data RECIPE`; for accuracy against the papers' tables, `ghostnest report RUN_DIR ... --out DIR`.",
        "",
        "- *infer*: `model.eval()`, `torch.inference_mode()`, one forward pass of a random batch; every model "
        "through `ghostnest.fuse` (BN folded into convolutions, MixConv groups merged, compiled Mish; "
        "EfficientNet-V2's BN folded the same way), as `ghostnest bench` does, unless the table's header says "
        "*unfused* (`--no-fuse`).",
        "- *train*: one optimizer step: forward, cross-entropy against random labels, backward, AdamW step.",
        "- GFLOPs are per image for one forward pass (multiply-add = 2 FLOPs), counted with PyTorch's FlopCounter on "
        "the `meta` device. Parameters at 100 classes (ME-NeSt-Ghost, EfficientNet-V2) or 10 (GhostMixNet cells).",
        "- Peak memory: on CPU the growth of the process's resident set during the first (warm-up) step, from "
        "`VmHWM` in `/proc/self/status` after resetting it through `/proc/self/clear_refs` (and handing free heap "
        "memory back with glibc's `malloc_trim`); it excludes the weights built before the step, and memory the "
        "allocator still holds can be reused uncounted, so read it as a rough figure. On CUDA: `torch.cuda.max_memory_allocated` during the step, less what was allocated before it other than the "
        "model's own weights: the model's weights (in train mode also its gradients and AdamW state) and the step's "
        "activations, not the other models' weights nor the input batch.",
        "- The *ME-NeSt-Ghost* paper (section 6) reports ME-NeSt-Ghost's inference time as *approximately 4-6x* "
        "EfficientNet-V2's at equal size; its experiments ran on one Tesla P100 GPU (Kaggle notebooks), and it gives "
        "no batch size or resolution for the timing.",
    ]
    return L


def _record_header(rec: dict) -> list[str]:
    """The heading of one saved setting (device, dtype): where and when it ran, and on CPU the noise notes."""
    env = rec["env"]
    where = (f"GPU {env['gpu']} (CUDA {env.get('cuda')})" if rec["device"] == "cuda"
             else f"CPU {env['cpu']}, {env['usable_cores']} usable cores ({env['cpu_count']} online), "
                  f"{env['torch_threads']} torch thread{'s' if env['torch_threads'] != 1 else ''}")
    title = f"{rec['device'].upper()}, {rec['dtype']}" + (", channels_last" if rec.get("channels_last") else "")
    L = ["", f"## {title}", ""]
    L.append(
        f"Measured {env['date_utc']} on {where}; torch {env['torch']}, timm {env['timm']}, Python {env['python']}"
        f"{'; --quick plan' if rec.get('quick') else ''}"
        f"{'; inference *unfused*' if not rec.get('fused_inference', False) else ''}"
        f"; whole run {rec.get('total_seconds', 0) / 60:.1f} min"
        + (f"; code at commit `{env['git_commit']}`" if env.get("git_commit") else "")
        + (f" with local changes to {', '.join(f'`{f}`' for f in env['git_dirty'])}" if env.get("git_dirty")
           else "")
        + "."
    )
    if rec["device"] == "cpu":
        L += ["", (
            "**Noise.** Absolute latencies drift between runs on this machine (a 2-core VM on a shared host; "
            "some earlier runs also shared its cores with other jobs): see the IQR and min-max columns. The "
            "ratios come from interleaved rounds and are the robust figures. For scale, the project's reference "
            "measurement on an idle machine of this kind is 260 ms per batch for `efficientnetv2_s` at "
            "128x128, batch 8 (2 threads)."
        ), "", (
            f"**Threads.** The CPU tables use {env['torch_threads']} torch "
            f"thread{'s' if env['torch_threads'] != 1 else ''} "
            "(`--threads`; PyTorch's default here is 2). With 2 threads on 2 *shared* cores, every OpenMP "
            "barrier waits for a thread that another process has pre-empted: in a trial the same "
            "`efficientnetv2_s` batch (32x32, batch 32) took anywhere from 109 ms to 7.7 s, and the medians "
            "were meaningless; with 1 thread the same trial's samples stayed within 224-341 ms. On an idle machine, "
            "`--threads 2` gives the faster absolute numbers."
        )]
    return L


def _record_tables(rec: dict) -> list[str]:
    """One setting's timing tables: GhostMixNet family, then ME-NeSt-Ghost vs EfficientNet-V2 per resolution."""
    L = []
    mem_label = "peak alloc MiB" if rec["device"] == "cuda" else "peak RSS growth MiB"
    measured = [c for c in rec["cells"] if "rows" in c]
    groups = [
        ("Inference", "infer", "ghostmixnet", "GhostMixNet family at 32x32 (CIFAR-10, 10 classes)"),
        ("Training step", "train", "ghostmixnet", "GhostMixNet family at 32x32 (CIFAR-10, 10 classes)"),
    ]
    for head, mode, fam, desc in groups:
        cells = [c for c in measured if c["mode"] == mode and c["family"] == fam]
        if cells:
            L += ["", f"### {head}: {desc}", ""] + _cell_table(cells, mem_label)
    for mode, head in (("infer", "Inference"), ("train", "Training step")):
        for res in (128, 256):
            cells = [c for c in measured if c["mode"] == mode and c["family"] == "menest" and c["input"] == res]
            if cells:
                L += ["", f"### {head}: ME-NeSt-Ghost vs EfficientNet-V2 at {res}x{res} (100 classes)", ""]
                L += _cell_table(cells, mem_label)
    return L


def _summary_table(rec: dict) -> list[str]:
    """One setting's ME-NeSt-Ghost / EfficientNet-V2 latency ratios, size by size."""
    L = []
    pts = _ratio_points(rec)
    if pts:
        L += ["", "### Summary: ME-NeSt-Ghost latency / EfficientNet-V2 latency", "",
              "Each cell: ratio of medians / ratio of minima (batch). Where the two differ by more than 25% "
              "(marked (!) in the tables above) one model of the pair caught more of the machine's other load; "
              "the ratio of minima is then the better estimate of the unloaded ratio.", "",
              "| mode | input | " + " | ".join(s.upper() for s in SIZES) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in SIZES) + " |"]
        for mode in ("infer", "train"):
            for res in (128, 256):
                row = {p[1]: f"{p[4]:.2f}x / {p[5]:.2f}x (b{p[3]})" if p[5] else f"{p[4]:.2f}x (b{p[3]})"
                       for p in pts if p[0] == mode and p[2] == res}
                if row:
                    L.append(f"| {mode} | {res} | " + " | ".join(row.get(s.upper(), "skipped") for s in SIZES)
                             + " |")
    return L


def _data_table(rec: dict) -> list[str]:
    """One setting's input-pipeline measurements (``ghostnest bench --data``), and the recipes skipped."""
    L = []
    data_rows = [d for d in rec.get("data", []) if "skipped" not in d]
    if data_rows:
        L += ["", "### Input pipeline alone (`ghostnest bench --data RECIPE`)", "",
              "| recipe | images (stand-in) | to px | batch | workers | per-image augmentation | Mixup/CutMix "
              "| images/s | median ms/batch |",
              "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
        for d in data_rows:
            wk = f"{d['workers']}" + (f" (recipe: {d['recipe_workers']})" if d["recipe_workers"] != d["workers"]
                                      else "")
            L.append(f"| `{d['recipe']}` | `{d['dataset'].split(',train')[0]}` | {d['image_size']} | {d['batch']} "
                     f"| {wk} | {', '.join(d['augment']) or 'none'} | {'yes' if d['mixing'] else 'no'} "
                     f"| {d['images_per_s']:,.1f} | {_fmt_ms(d['median_batch_ms'])} |")
        L += ["", "CIFAR is not on this machine, so synthetic images of the stored size stand in for it (the "
              "per-image work is the same). Workers are capped at the machine's cores. Compare with the "
              "training-step images/s above: where the pipeline is faster, it is not the bottleneck."]
    for d in rec.get("data", []):
        if "skipped" in d:
            L.append(f"- input pipeline of `{d['recipe']}`: {d['skipped']}")
    return L


def _record_rest(rec: dict, results_dir: Path) -> list[str]:
    """One setting's findings, repeatability and the cells it did not measure."""
    L = []
    L += _findings(rec)
    L += _repeatability(rec, results_dir)
    skipped = [c for c in rec["cells"] if "skipped" in c]
    if not skipped:
        L += ["", "Every planned cell was measured (no cell skipped)."]
    if skipped:
        L += ["", "### Cells not measured", ""]
        for c in skipped:
            L.append(f"- {c['mode']} {' vs '.join(c['models'])} at {c['input']}: {c['skipped']}")
    return L


def _closing(records: list[dict], chart: Path | None, doc: Path) -> list[str]:
    """The chart, the hand-written sections of benchmarks/sections/ and, without GPU results, the GPU note."""
    L = []
    if chart is not None:
        L += ["", "## Latency ratios", "", f"![ME-NeSt-Ghost / EfficientNet-V2 latency]({chart.relative_to(doc.parent)})",
              "", "Bars: median latency of ME-NeSt-Ghost over EfficientNet-V2 of the same size in the same cell "
              "(batch size under each bar), black ticks the ratio of the fastest steps; the grey band is the paper's 4-6x."]
    sections = sorted((ROOT / "benchmarks" / "sections").glob("*.md"))
    for section in sections:  # hand-written sections (e.g. speed work), included verbatim
        L += ["", section.read_text().strip()]
    if not any(r["device"] == "cuda" for r in records):
        L += ["", "## GPU", "", (
            "**GPU tables are pending**: this page was generated on a machine without a GPU. On a CUDA machine, "
            "`make gpu-check` (benchmarks/gpu_check.py, docs/gpu.md) measures everything in resumable steps and "
            "fills the GPU check section below; `.venv/bin/python benchmarks/run_benchmarks.py --device cuda --dtype "
            "bf16 --batch 128 256` adds the same tables as the CPU ones above from `benchmarks/results/cuda-bf16.json`.")]
    return L


def _marked_blocks(doc: Path) -> list[str]:
    """Blocks other scripts keep in the page between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` (the GPU
    check's section, the int8 table), carried over verbatim when the page is regenerated."""
    text = doc.read_text() if doc.is_file() else ""
    return [x for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", text, re.S) for x in ("", m.group(0))]


def render(results_dir: Path = RESULTS_DIR, doc: Path = DOC, img_dir: Path = IMG_DIR) -> Path:
    records = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    # this script's own results only: the folder also holds gpu_check.py's cuda-<step>.json, int8.py's, ...
    records = [r for r in records if {"key", "device", "cells"} <= set(r)]
    for rec in records:
        rec["cells"] = _listed_cells(rec)
    records.sort(key=lambda r: (r["device"] != "cpu", r["key"]))
    for rec in records:  # results saved before min_ratio_to_first existed
        for cell in rec["cells"]:
            for r in cell.get("rows", []):
                r.setdefault("min_ratio_to_first", r["min_ms"] / cell["rows"][0]["min_ms"])
    chart = plot_ratios(records, img_dir / "bench_ratios.png")
    L = _intro()
    for rec in records:
        L += _record_header(rec) + _record_tables(rec) + _summary_table(rec) + _data_table(rec)
        L += _record_rest(rec, results_dir)
    L += _closing(records, chart, doc)
    L += _marked_blocks(doc)
    L.append("")
    from ghostnest.fileio import atomic_write_text

    atomic_write_text(doc, "\n".join(L))
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="run every cell at each of these batch sizes (default: a per-cell CPU plan)")
    p.add_argument("--quick", action="store_true", help="fewer cells and rounds (a few minutes on CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: 1, robust on a shared machine; on CUDA: PyTorch's)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-fuse", action="store_true",
                   help="time inference on the plain models (default: every model through ghostnest.fuse, as "
                        "`ghostnest bench` does)")
    p.add_argument("--only", nargs="+", default=None, metavar="KEY",
                   help="run only cells whose id contains one of these strings, e.g. infer-s- train-ghostmixnet")
    p.add_argument("--budget-min", type=float, default=17.0,
                   help="skip the cells that would start after this many minutes (default 17, so the run ends near 20)")
    p.add_argument("--no-data", action="store_true", help="skip the input-pipeline (--data) measurements")
    p.add_argument("--render-only", action="store_true", help="rebuild the doc from benchmarks/results/*.json")
    p.add_argument("--list", action="store_true", help="print the planned cells and exit")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where results JSON files live")
    p.add_argument("--doc", default=str(DOC), help="the page to write (its chart goes to img/ beside it)")
    args = p.parse_args(argv)
    try:
        if args.list:
            from ghostnest.devices import resolve_device

            device = args.device if args.device != "auto" else resolve_device("auto").type
            for c in plan_cells(device, args.quick, args.batch):
                what = f"skipped: {c['skipped']}" if "skipped" in c else f"batch {c['batch']}, {c['repeats']} rounds"
                print(f"{c['id']:<28} {' vs '.join(c['models']):<70} {what}")
            return 0
        results_dir = Path(args.results_dir).resolve()
        doc = Path(args.doc).resolve()
        if not args.render_only:
            run(args, results_dir)
        print(f"wrote {render(results_dir, doc, doc.parent / 'img')}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
