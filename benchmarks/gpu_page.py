"""The GPU check's data and its page: what benchmarks/gpu_check.py measures (the model lists and the paper runs it
projects, as data in one place: add a model here) and the GPU section of docs/benchmarks.md rendered from its
results files (:func:`render`, :func:`summary`). Rendering works on any machine; figures not measured yet read
``missing``.
"""
from __future__ import annotations

from cell_records import read_json

# --- what the check measures (data) --------------------------------------------------------------------------------
SIZES = ("s", "m", "l", "xl")  # ME-NeSt-Ghost and EfficientNet-V2 sizes, paired by size in the speed cells
TARGETS = {"infer": 1.2, "train": 1.5, "ghostmix_train_vs_plain": 2.5}
# the paper runs whose wall time is projected: ME-NeSt-Ghost's Table 5 and GhostMixNet's ablation rows
TABLE5 = {"images": 47_500, "val": 2_500, "epochs": 100, "recipe": "menest-cifar100",
          "models": [f"menest_ghost_{s}" for s in SIZES] + [f"efficientnetv2_{s}" for s in SIZES]}
ABLATION = {"images": 50_000, "val": 10_000, "epochs": 200,
            "recipes": ["ghostmixnet-cifar10-resnet", "ghostmixnet-cifar10-resnet-se", "ghostmixnet-cifar10-ghost-se",
                        "ghostmixnet-cifar10"]}
# The ME-NeSt-Ghost paper's future work (section 6; docs/training.md): each model -> the ME-NeSt-Ghost size it is
# matched to. `speed` times each against its match (after the Table 5 cells, no target), `project` and the
# projection each as a run of the `menest-cifar100` recipe. A model built for one input size (CoAtNet) is built for
# the size it is timed at (gpu_check.size_kwargs).
FUTURE = {"menest_ghost_tsa_s": "menest_ghost_s", "menest_ghost_tsa_m": "menest_ghost_m",
          "menest_ghost_resnet_s": "menest_ghost_s", "menest_ghost_resnet_m": "menest_ghost_m",
          "convnext_nano": "menest_ghost_s", "convnext_tiny": "menest_ghost_s", "convnext_small": "menest_ghost_m",
          "coatnet_nano_rw_224": "menest_ghost_s", "coatnet_0_rw_224": "menest_ghost_s",
          "coatnet_1_rw_224": "menest_ghost_m", "coatnet_2_rw_224": "menest_ghost_m"}
DRY_RUN_FUTURE = ("menest_ghost_tsa_s", "coatnet_nano_rw_224")  # the dry run's share: one of ours, one fixed-size
MIXCONV_TRAIN_IMPLS = ("split", "single", "repeat", "rowgrad")  # "matmul" is for tiny maps only (4x4 and below)


# --- rendering -----------------------------------------------------------------------------------------------------
def _fmt(v, spec=".1f", none="missing"):
    if v is None:
        return none
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _hours(s):
    return "missing" if s is None else (f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min")


def projection(res: dict) -> list[dict]:
    """Projected wall time of each paper run from the GPU step throughput (``project``), the input pipeline
    (``pipeline``) and the overhead the real epochs (``train``) show over that simple model."""
    proj = (res.get("project") or {}).get("cells", {})
    pipe = (res.get("pipeline") or {}).get("cells", {})
    real = (res.get("train") or {}).get("cells", {})

    def pipeline_rate(recipe):
        rates = [c.get("images_per_s") for k, c in pipe.items() if k == f"{recipe}/workers=recipe"]
        return rates[0] if rates and rates[0] else None

    def overhead(real_key, proj_key, images):
        r, p = real.get(real_key, {}), proj.get(proj_key, {})
        gpu, pl = p.get("images_per_s"), pipeline_rate(real_key)
        if not (r.get("steady_epoch_s") and gpu):
            return 1.0, False
        simple = images / min(gpu, pl or gpu)
        return max(1.0, r["steady_epoch_s"] / simple), True

    def options(recipe):  # every measured way to feed this recipe: (cell name, images/s of the pipeline alone)
        return [(k.split("/", 1)[1], c["images_per_s"]) for k, c in pipe.items()
                if k.startswith(f"{recipe}/") and c.get("images_per_s")]

    rows = []
    menest_overhead, menest_calibrated = overhead("menest-cifar100", "menest_ghost_s", 9_500)
    for m in TABLE5["models"] + list(FUTURE):
        rows.append(_proj_row(m, "menest-cifar100", proj.get(m, {}), pipeline_rate("menest-cifar100"), TABLE5,
                              menest_overhead, menest_calibrated, options("menest-cifar100")))
    ghostmixnet_overhead, ghostmixnet_calibrated = overhead("ghostmixnet-cifar10", "ghostmixnet-cifar10", 50_000)
    for r in ABLATION["recipes"]:
        rows.append(_proj_row(r, r, proj.get(r, {}), pipeline_rate(r), ABLATION, ghostmixnet_overhead,
                              ghostmixnet_calibrated, options(r)))
    return rows


def fed_rate(gpu: float, option: str, pipe_rate: float) -> float:
    """Training images/s of a GPU stepping at ``gpu`` images/s fed by one pipeline option: CPU workers run beside
    the GPU (the slower of the two sets the pace); augmentation on the device runs on the GPU between the steps
    (their times add)."""
    if option.startswith("device-augment"):
        return 1.0 / (1.0 / gpu + 1.0 / pipe_rate)
    return min(gpu, pipe_rate)


def _proj_row(name, recipe, cell, pipe_rate, paper, over, calibrated, options=()):
    gpu = cell.get("images_per_s")
    row = {"run": name, "recipe": recipe, "epochs": paper["epochs"], "gpu_img_s": gpu, "pipeline_img_s": pipe_rate,
           "bound": None, "epoch_s": None, "total_s": None, "calibrated": calibrated, "best_option": None,
           "best_total_s": None}

    def total(rate):  # eval: forward only, ~1/3 of a training step
        return (paper["images"] / rate + paper["val"] / (3 * gpu)) * over * paper["epochs"]

    if gpu:
        rate = min(gpu, pipe_rate) if pipe_rate else gpu
        row["bound"] = ("input pipeline (CPU)" if pipe_rate and pipe_rate < gpu else "GPU") + ("" if pipe_rate else "?")
        row["total_s"] = total(rate)
        row["epoch_s"] = row["total_s"] / paper["epochs"]
        if options:
            best, best_rate = max(((o, fed_rate(gpu, o, r)) for o, r in options), key=lambda t: t[1])
            row["best_option"], row["best_total_s"] = best, total(best_rate)
    return row


def render(ctx, steps: dict[str, str]) -> str:
    """The GPU section of docs/benchmarks.md from the results files of ``steps`` (name -> what it measures, in
    priority order): every table, with ``missing`` where a step has not measured its cell yet."""
    res = {name: read_json(ctx.path(name)) for name in steps}
    have = {k: v for k, v in res.items() if v}
    missing = [k for k in steps if not (res.get(k) or {}).get("complete")]
    L = ["## GPU check (benchmarks/gpu_check.py)", ""]
    label = "in a dry run on the CPU, tiny sizes: not GPU figures" if ctx.dry_run else "with CUDA"
    env = (have.get("env") or {}).get("cells", {}).get("versions", {})
    if env:
        L += [f"Measured {label} on **{env.get('gpu', ctx.device)}**, torch {env.get('torch')}, CUDA "
              f"{env.get('cuda')}, cuDNN {env.get('cudnn')}, timm {env.get('timm')}, {env.get('cpu_count')} CPU "
              "cores. Regenerate with `python benchmarks/gpu_check.py` (docs/gpu.md).", ""]
    if missing:
        L += ["### GPU figures: not yet measured", "",
              "No GPU run has produced these yet" + (" (this page was rendered on a machine without CUDA)"
                                                    if not have else "") + "; the figures of these steps are **missing** "
              "until `python benchmarks/gpu_check.py` runs on a CUDA machine (docs/gpu.md):", ""]
        L += [f"- `{k}`: {steps[k]}" for k in missing]
        L += [""]
    if not have:  # nothing measured yet: the list above is the whole section
        L += ["The commands, their time budgets and what each step measures: docs/gpu.md. These steps have never "
              "run on a GPU yet."]
        return "\n".join(L) + "\n"
    # speed
    for step, title in (("speed", "Speed ratios (eager; inference fused)"), ("speed-compile", "Speed ratios, torch.compile")):
        cells = (have.get(step) or {}).get("cells", {})
        L += [f"### {title}", "", "ME-NeSt-Ghost vs EfficientNet-V2 (timm) of the same size, bf16 autocast, "
              "channels_last, 256x256, median ms per batch; ratio = ours / theirs (targets: inference <= 1.2, "
              "training step <= 1.5). A row named by a model is a future-work model (ME-NeSt-Ghost, section 6) in "
              "the first column of times against the ME-NeSt-Ghost it is matched to in the second, without target.",
              "",
              "| size | mode | batch | ME-NeSt-Ghost ms | EfficientNet-V2 ms | ratio | target met |", "|---|---|---|---|---|---|---|"]
        keys = [f"{s}/{m}/b{b}" for s in SIZES for m in ("infer", "train") for b in (128, 256)]
        keys += [k for k in cells if k not in keys]
        for k in keys:
            c = cells.get(k)
            if c is None and step == "speed-compile" and not k.startswith(("s/", "m/")) or (
                    c is None and step == "speed-compile" and k.endswith("b256")):
                continue
            s, m, b = k.split("/")
            s = s.upper() if s in SIZES else f"`{s}`"  # a size, or a future-work model's name
            c = c or {}
            if "error" in c or "not_run" in c:
                L.append(f"| {s} | {m} | {b[1:]} | {c.get('error') or c.get('not_run')} | | | |")
                continue
            L.append(f"| {s} | {m} | {b[1:]} | {_fmt((c.get('ours') or {}).get('median_ms'))} | "
                     f"{_fmt((c.get('theirs') or {}).get('median_ms'))} | {_fmt(c.get('ratio'), '.2f')} | "
                     f"{_met(c)} |")
        L.append("")
    g = have.get("speed-ghostmix") or {}
    L += ["### GhostMixNet training throughput vs the plain fp32 eager version", "",
          "Batch 128, 32x32, one AdamW step; target >= 2.5x the plain eager fp32 network "
          "(benchmarks/plain_ghostmixnet.py).", "", "| variant | ms per step | images/s |", "|---|---|---|"]
    for k in ("plain_fp32_eager", "ours_fp32_eager", "ours_bf16_cl", "ours_bf16_cl_compiled"):
        c = g.get("cells", {}).get(k, {})
        L.append(f"| {k} | {_fmt(c.get('median_ms'))} | {_fmt(c.get('images_per_s'), ',.0f', c.get('error', 'missing'))} |")
    sp = g.get("speedup")
    L += ["", f"Speed-up of the best variant: **{_fmt(sp and sp['ratio'], '.2f')}x** "
          f"({'target met' if sp and sp['met'] else 'target missed' if sp else 'missing'}).", ""]
    # mixconv
    mc = next(iter((have.get("mixconv") or {}).get("cells", {}).values()), None)
    L += ["### MixConv implementation in training (ME-NeSt-Ghost-S step)", "",
          "bf16, channels_last, 256x256, batch 128, every MixConv forced to one implementation "
          "(ghostnest/layers/mixconv.py); `auto` trains with `split` on GPUs.", "",
          "| implementation | ms per step | images/s | vs split |", "|---|---|---|---|"]
    for impl in MIXCONV_TRAIN_IMPLS:
        c = ((mc or {}).get("impls") or {}).get(impl, {})
        L.append(f"| {impl} | {_fmt(c.get('median_ms'), '.1f', (mc or {}).get('error', 'missing'))} | "
                 f"{_fmt(c.get('images_per_s'), ',.0f')} | {_fmt(c.get('vs_split'), '.2f')} |")
    L.append("")
    # training
    t = (have.get("train") or {}).get("cells", {})
    L += ["### Training on the GPU (recipes as written, fake data of the real shape)", "",
          "| run | data | epoch seconds (1st, steady) | steady images/s | test top-1 |", "|---|---|---|---|---|"]
    for k in ("ghostmixnet-cifar10", "menest-cifar100", "digits"):
        c = t.get(k, {})
        ep = c.get("epoch_s") or []
        rate = c.get("train_images") / c["steady_epoch_s"] if c.get("train_images") and c.get("steady_epoch_s") else None
        data = (c.get("overrides") or {}).get("dataset", "digits (real)")
        L.append(f"| {k} | {data} | {', '.join(_fmt(e) for e in ep) or c.get('error', 'missing')} | "
                 f"{_fmt(rate, ',.0f')} | {_fmt(c.get('test_top1'), '.2f')} |")
    d = t.get("digits", {})
    L += ["", f"Digits learning check (quickstart recipe on the GPU, test top-1 >= 90%): "
          f"{'missing' if 'learned' not in d else ('passed' if d['learned'] else '**failed**')}.", ""]
    # projection
    L += ["### Projected wall time of the paper runs on this GPU", "",
          "Per epoch: training images / min(GPU training images/s, input pipeline images/s) + validation, times the "
          "overhead the real epochs above show over that estimate (data loading start-up, evaluation, logging). "
          "Table 5: 47,500 training images at 256x256, batch 32, 100 epochs; GhostMixNet ablation: 50,000 at 32x32, "
          "batch 128, 200 epochs.", "",
          "The last two columns: the fastest measured way to feed the run (more workers, or `augment_on: device` with "
          "its group size: its augmentation time then adds to the GPU's step time) and the whole run with it.", "",
          "| run | epochs | GPU img/s | pipeline img/s | bound by | per epoch | whole run | fastest input | whole run "
          "with it |", "|---|---|---|---|---|---|---|---|---|"]
    for r in projection(have):
        L.append(f"| {r['run']} | {r['epochs']} | {_fmt(r['gpu_img_s'], ',.0f')} | {_fmt(r['pipeline_img_s'], ',.0f')} | "
                 f"{r['bound'] or 'missing'} | {_hours(r['epoch_s']) if r['epoch_s'] else 'missing'} | "
                 f"{_hours(r['total_s'])} | {r['best_option'] or 'missing'} | {_hours(r['best_total_s'])} |")
    L.append("")
    # pipeline
    p = (have.get("pipeline") or {}).get("cells", {})
    L += ["### Input pipeline alone (no model)", "", "| recipe / workers | images/s | median ms per batch |",
          "|---|---|---|"]
    for k, c in p.items():
        L.append(f"| {k} | {_fmt(c.get('images_per_s'), ',.0f', c.get('error', 'missing'))} | "
                 f"{_fmt(c.get('median_batch_ms'))} |")
    if not p:
        L.append("| missing | | |")
    L.append("")
    dd = (have.get("ddp") or {}).get("cells", {}).get("sigterm_resume")
    L += ["### Distributed: torchrun --nproc_per_node 1, nccl, sync_bn", ""]
    if dd:
        L.append(f"SIGTERM stopped the run at {dd.get('stopped_at')}; resumed under torchrun; final weights "
                 f"{'identical to' if dd.get('exact') else 'differ from'} the uninterrupted run's (max |diff| "
                 f"{_fmt(dd.get('max_abs_weight_diff'), '.3g')}); metrics equal: {dd.get('metrics_equal')}."
                 + (f" Error: {dd.get('error') or dd.get('stderr', '')[-300:]}" if not dd.get("ok") else ""))
    else:
        L.append("missing")
    L.append("")
    pr = (have.get("profile") or {}).get("cells", {})
    L += ["### Profile: top kernels", ""]
    for k, c in pr.items():
        top = c.get("top") or []
        L.append(f"- `{k}`: " + ("; ".join(f"{e['name'][:60]} {e['self_ms']:.2f} ms ({e['share']:.0%})"
                                          for e in top[:6]) or c.get("error", "missing")))
    if not pr:
        L.append("missing")
    return "\n".join(L) + "\n"


def _met(cell: dict) -> str:
    """A speed cell's target column: '-' for a cell without target (the future-work models), else met or not."""
    if "met" in cell and cell.get("target") is None:
        return "-"
    return "missing" if cell.get("met") is None else ("yes" if cell["met"] else "**no**")


def summary(ctx, budgets: dict[str, float]) -> str:
    """One line per step (name -> budget in seconds): done, partial or missing, time taken, errors, the verdict."""
    rows = []
    for name, budget in budgets.items():
        d = read_json(ctx.path(name))
        state = "missing" if not d else ("done" if d.get("complete") else "partial")
        errors = sum(1 for c in (d or {}).get("cells", {}).values() if "error" in c)
        verdict = ""
        if d:
            if name.startswith("speed") and name != "speed-ghostmix":
                met = [c.get("met") for c in d["cells"].values() if "met" in c and c.get("target") is not None]
                verdict = f"{sum(bool(m) for m in met)}/{len(met)} cells meet target"
            elif name == "speed-ghostmix" and d.get("speedup"):
                verdict = f"{d['speedup']['ratio']:.2f}x plain (target 2.5x)"
            elif name == "tests":
                c = d["cells"].get("pytest", {})
                verdict = f"rc {c.get('rc')} {c.get('counts')}"
            elif name == "mixconv":
                c = next(iter(d["cells"].values()), {})
                verdict = f"fastest: {c.get('fastest', c.get('error'))}"
            elif name == "ddp":
                c = d["cells"].get("sigterm_resume", {})
                verdict = "exact resume" if c.get("exact") else f"not exact: {c.get('error') or c.get('stopped_at')}"
            elif name == "train":
                verdict = f"digits learned: {d['cells'].get('digits', {}).get('learned')}"
        rows.append((name, state, f"{d.get('elapsed_s', 0):.0f}s" if d else "-", f"{budget / 60:.1f}", errors, verdict))
    out = [f"{'step':<15} {'state':<8} {'took':>6} {'budget min':>10} {'errors':>6}  result"]
    out += [f"{n:<15} {s:<8} {t:>6} {b:>10} {e:>6}  {v}" for n, s, t, b, e, v in rows]
    return "\n".join(out)
