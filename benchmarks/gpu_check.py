"""Verify and measure everything on the GPU that is present: one command, in resumable steps of under 9 minutes.

    python benchmarks/gpu_check.py                 # every step not done yet, then `render`
    python benchmarks/gpu_check.py --within 8.5 --pack OUT/cuda-results.tar.gz   # a short GPU run: all steps, by
                                                   # priority, each its share of 8.5 minutes; the JSON in one file
    python benchmarks/gpu_check.py --step speed    # one step (repeatable: --step env --step tests)
    python benchmarks/gpu_check.py --list          # the steps, what each measures and its time budget
    python benchmarks/gpu_check.py --step render   # docs/benchmarks.md's GPU section from the JSON files (any machine)
    python benchmarks/gpu_check.py --dry-run       # every step on the CPU with tiny sizes (what the tests run)

Each step writes ``benchmarks/results/cuda-<step>.json`` atomically, after every finished cell, with
``"complete": false`` until the step is done. A step whose file is complete is skipped (``--force`` runs it again);
an incomplete one continues with the cells it has not measured yet. Every step has a time budget (printed; all
under 9 minutes on one H100): a step that reaches it stops starting new cells, records which ones it left, and
finishes them on its next run. ``render`` writes the section between ``<!-- gpu:begin -->`` and
``<!-- gpu:end -->`` in docs/benchmarks.md (appended if the markers are missing; the rest of the file is untouched)
and prints a summary table; it works on a machine without CUDA and names the figures still missing.

``--within MINUTES`` is for a short GPU run, shorter than the steps' budgets (docs/gpu.md): the steps run in the
order of :data:`STEPS` (their priority), each with the share of the minutes left that its budget is of the budgets
left, so every step measures its first cells and the rest resume in a later run; at the deadline no step or cell
starts, and a cell still running 45 s after it is stopped (recorded as not run) so the command ends on time.
``--pack FILE`` writes every results file into one ``.tar.gz`` at the end, however the run ended (a short GPU run
brings back at most 8 files).

Without CUDA (and without ``--dry-run``/``--device cpu``) the script says so in one line and exits 2.
docs/gpu.md says how a short GPU run (15 minutes of GPU time) sets up and runs it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"  # the section's markers in docs/benchmarks.md
sys.path.insert(0, str(ROOT / "benchmarks"))  # cell_records, gpu_page, plain_ghostmixnet

from cell_records import (GRACE_S, Ctx, Deadline, Record, deadline_alarm, pack, read_json, say)  # noqa: E402
from gpu_page import (ABLATION, DRY_RUN_FUTURE, FUTURE, MIXCONV_TRAIN_IMPLS, SIZES, TABLE5, TARGETS, render,  # noqa: E402
                      summary)

DRY_RUN_GHOSTMIXNET = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}
DRY_RUN_GHOSTMIXNET_SET = "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}"
DRY_RUN_MENEST = {"stages": [["ms", 1, 8, 1, 1], ["ms_ghost", 2, 16, 2, 2]], "num_features": 32}


# ---------------------------------------------------------------------------------------------------------- env
def step_env(ctx: Ctx, rec: Record) -> None:
    import torch

    from ghostnest.bench import environment

    rec.cell("environment", lambda: environment(ctx.device))

    def versions():
        import timm
        import torchvision

        out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
               "timm": timm.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "cpu_count": os.cpu_count()}
        if ctx.device.startswith("cuda"):
            p = torch.cuda.get_device_properties(0)
            out.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                       capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported(),
                       nccl=torch.distributed.is_nccl_available())
        return out

    rec.cell("versions", versions)

    def smi():
        try:
            p = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
            return {"nvidia_smi": p.stdout[-4000:], "rc": p.returncode}
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"nvidia_smi": None, "note": str(exc)}

    rec.cell("nvidia_smi", smi)


# -------------------------------------------------------------------------------------------------------- tests
def step_tests(ctx: Ctx, rec: Record) -> None:
    """The suite's CUDA cases (marked ``cuda`` by tests/conftest.py); a dry run runs two CPU cases instead."""
    if ctx.dry_run:
        args = ["tests/test_devices.py", "-m", "not cuda", "-k", "ghost_module"]
    else:
        args = ["tests", "-m", "cuda"]

    def run():
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=rec.kill_after())
        tail = (p.stdout + p.stderr)[-6000:]
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
        return {"command": " ".join(cmd[1:]), "rc": p.returncode, "counts": counts, "ok": p.returncode == 0,
                "tail": tail}

    rec.cell("pytest", run)


# -------------------------------------------------------------------------------------------------------- speed
def _bench(names, *, ctx, size, batch, mode, fuse, compile=False, repeats=None, num_classes=100, model_kwargs=None):
    from ghostnest.bench import bench_models

    rows = bench_models(list(names), input_size=size, batch=batch, mode=mode, device=ctx.device,
                        dtype=ctx.choose("bf16", "fp32"), channels_last=not ctx.dry_run, compile=compile,
                        repeats=repeats or ctx.choose(6, 2), warmup=ctx.choose(2, 1), num_classes=num_classes,
                        fuse=fuse, model_kwargs=model_kwargs)
    keep = ("name", "mode", "dtype", "batch", "input_size", "channels_last", "compiled", "fused", "params", "gflops",
            "median_ms", "p25_ms", "p75_ms", "images_per_s", "peak_mem_mb", "first_call_ms")
    return {r["name"]: {k: r.get(k) for k in keep} for r in rows}


def size_kwargs(model: str, size: int) -> dict:
    """``img_size=size`` for a model built for one input size (timm's ``fixed_input_size``, e.g. CoAtNet: see
    ``ghostnest.registry.register_timm_model``), nothing for a model that runs at any size."""
    import timm

    import ghostnest  # noqa: F401  (our names in timm's registry)

    cfg = timm.models.get_pretrained_cfg(model)
    return {"img_size": size} if cfg is not None and cfg.fixed_input_size else {}


def _pair_cells(ctx: Ctx, rec: Record, compile: bool) -> None:
    sizes = ctx.choose(SIZES if not compile else ("s", "m"), ("s",))
    batches = ctx.choose((128, 256) if not compile else (128,), (2,))
    image = ctx.choose(256, 32)
    for batch in batches:  # every size at the first batch before any at the second: a short GPU run gets S-XL first
        for size in sizes:
            ours, theirs = f"menest_ghost_{size}", f"efficientnetv2_{size}"
            for mode in ("infer", "train"):
                def run(ours=ours, theirs=theirs, mode=mode, batch=batch):
                    rows = _bench([ours, theirs], ctx=ctx, size=image, batch=batch, mode=mode,
                                  fuse=mode == "infer" and not compile, compile=compile)
                    ratio = rows[ours]["median_ms"] / rows[theirs]["median_ms"]
                    return {"ours": rows[ours], "theirs": rows[theirs], "ratio": ratio, "target": TARGETS[mode],
                            "met": ratio <= TARGETS[mode]}
                rec.cell(f"{size}/{mode}/b{batch}", run)
    rec.data["setup"] = {"input_size": image, "dtype": ctx.choose("bf16", "fp32"), "channels_last": not ctx.dry_run,
                         "fused_infer": not compile, "compiled": compile,
                         "ratio": "median time per batch, ME-NeSt-Ghost / EfficientNet-V2 (timm) of the same size"}


def step_speed(ctx: Ctx, rec: Record) -> None:
    """ME-NeSt-Ghost S/M/L/XL vs EfficientNet-V2 S/M/L/XL, bf16, channels_last, batch 128 and 256, 256x256:
    inference fused (both sides, ``ghostnest.fuse``), training step eager; then each future-work model against
    the ME-NeSt-Ghost it is matched to (:data:`FUTURE`), batch 128."""
    _pair_cells(ctx, rec, compile=False)
    image, batch = ctx.choose(256, 32), ctx.choose(128, 2)
    for model in ctx.choose(tuple(FUTURE), DRY_RUN_FUTURE):
        for mode in ("infer", "train"):
            def run(model=model, mode=mode):  # two calls: CoAtNet's img_size is an option the other side refuses
                ours = _bench([model], ctx=ctx, size=image, batch=batch, mode=mode, fuse=mode == "infer",
                              model_kwargs=size_kwargs(model, image))[model]
                theirs = _bench([FUTURE[model]], ctx=ctx, size=image, batch=batch, mode=mode,
                                fuse=mode == "infer")[FUTURE[model]]
                return {"ours": ours, "theirs": theirs, "ratio": ours["median_ms"] / theirs["median_ms"],
                        "target": None, "met": None}
            rec.cell(f"{model}/{mode}/b{batch}", run)


def step_speed_compile(ctx: Ctx, rec: Record) -> None:
    """The same cells with ``torch.compile`` on both sides (S and M, batch 128: each compile takes minutes).
    A dry run times them eagerly (compiling on the CPU takes minutes)."""
    _pair_cells(ctx, rec, compile=not ctx.dry_run)


def step_speed_ghostmix(ctx: Ctx, rec: Record) -> None:
    """GhostMixNet training throughput vs the plain fp32 eager version (benchmarks/plain_ghostmixnet.py)."""
    import torch

    import ghostnest
    from ghostnest.bench import bench_variants
    from plain_ghostmixnet import PlainGhostMixNet

    batch = ctx.choose(128, 4)
    common = dict(input_size=32, batch=batch, num_classes=10, mode="train", device=ctx.device,
                  repeats=ctx.choose(20, 2), warmup=ctx.choose(3, 1))

    def one(model_fn, dtype, cl):
        rows = bench_variants([("m", model_fn())], dtype=dtype, channels_last=cl, **common)
        return {k: rows[0].get(k) for k in ("median_ms", "p25_ms", "p75_ms", "images_per_s", "first_call_ms")}

    kw = ctx.choose({}, DRY_RUN_GHOSTMIXNET)
    rec.cell("plain_fp32_eager", lambda: one(PlainGhostMixNet, "fp32", False))
    rec.cell("ours_fp32_eager", lambda: one(lambda: ghostnest.create_model("ghostmixnet", num_classes=10, **kw),
                                            "fp32", False))
    low = ctx.choose("bf16", "fp32")
    rec.cell("ours_bf16_cl", lambda: one(lambda: ghostnest.create_model("ghostmixnet", num_classes=10, **kw), low,
                                         not ctx.dry_run))
    if not ctx.dry_run:  # compiling on the CPU takes minutes: not in a dry run
        rec.cell("ours_bf16_cl_compiled", lambda: one(
            lambda: torch.compile(ghostnest.create_model("ghostmixnet", num_classes=10)), "bf16", True))
    base = rec.data["cells"].get("plain_fp32_eager", {}).get("images_per_s")
    if base:
        best = max((c.get("images_per_s") or 0, k) for k, c in rec.data["cells"].items() if k != "plain_fp32_eager")
        rec.data["speedup"] = {"best": best[1], "ratio": best[0] / base, "target": TARGETS["ghostmix_train_vs_plain"],
                               "met": best[0] / base >= TARGETS["ghostmix_train_vs_plain"]}


# ------------------------------------------------------------------------------------------------------ mixconv


def step_mixconv(ctx: Ctx, rec: Record) -> None:
    """MixConv's implementation in training on the GPU: an ME-NeSt-Ghost-S training step (bf16, channels_last,
    256x256, batch 128) with every MixConv forced to each implementation, interleaved. ``impl="auto"`` trains with
    "split" on GPUs because the CPU's measured choices need not carry over; this says whether another is faster."""
    import torch

    import ghostnest
    from ghostnest.bench import bench_variants
    from ghostnest.layers import set_mixconv_impl

    kw = ctx.choose({}, {"stages": DRY_RUN_MENEST["stages"], "num_features": 32})

    def build(impl):
        torch.manual_seed(0)  # the same weights for every implementation
        return set_mixconv_impl(ghostnest.create_model("menest_ghost_s", num_classes=100, **kw), impl)

    batch = ctx.choose(128, 2)

    def run():
        rows = bench_variants([(impl, build(impl)) for impl in MIXCONV_TRAIN_IMPLS], input_size=ctx.choose(256, 32),
                              batch=batch, num_classes=100, mode="train", device=ctx.device,
                              dtype=ctx.choose("bf16", "fp32"), channels_last=not ctx.dry_run, repeats=ctx.choose(6, 2),
                              warmup=ctx.choose(2, 1))
        out = {r["name"]: {k: r.get(k) for k in ("median_ms", "p25_ms", "p75_ms", "images_per_s", "peak_mem_mb")}
               for r in rows}
        split = out["split"]["median_ms"]
        for r in out.values():
            r["vs_split"] = r["median_ms"] / split
        return {"impls": out, "fastest": min(out, key=lambda k: out[k]["median_ms"])}

    rec.cell(f"s/train/b{batch}", run)


# -------------------------------------------------------------------------------------------------------- train
def _train_cell(ctx: Ctx, recipe: str, overrides: dict, key: str) -> dict:
    from ghostnest.train import resolve_config, train

    cfg = resolve_config(recipe, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        run = Path(tmp) / key.replace("/", "_")
        res = train(cfg, run, device=ctx.device, progress=False)
        wall = time.monotonic() - t
        import csv

        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    epochs = [float(r["seconds"]) for r in rows]
    out = {"recipe": recipe, "overrides": {k: v for k, v in overrides.items()}, "wall_s": wall, "epoch_s": epochs,
           "steady_epoch_s": epochs[-1], "test_top1": res.get("test_top1"), "train_loss": [float(r["train_loss"])
                                                                                          for r in rows],
           "model": res.get("model"), "params": res.get("params"), "image_size": res.get("image_size")}
    return out


def step_train(ctx: Ctx, rec: Record) -> None:
    """Both recipes as written (augmentation, batch, optimizer, AMP, channels_last) on fake data of the real shape,
    2 epochs each (the second is the steady-state epoch), after the digits learning check (first: the cheapest)."""
    if ctx.dry_run:
        ghostmixnet_over = {"dataset": "fake:classes=10,size=16,train=64,test=16",
                            "model_kwargs": DRY_RUN_GHOSTMIXNET, "epochs": 1,
                            "workers": 0, "batch_size": 16, "augment": []}
        menest_over = {"dataset": "fake:classes=4,size=16,train=64,test=16",
                       "model_kwargs": DRY_RUN_MENEST, "epochs": 1,
                       "workers": 0, "batch_size": 16, "image_size": 32, "augment": []}
    else:
        # CIFAR-10's real count and size; the recipe as written apart from the data and the epoch count
        ghostmixnet_over = {"dataset": "fake:classes=10,size=32,train=50000,test=10000", "epochs": 2}
        # 128x128 stored, resized to the recipe's 256; a fifth of CIFAR-100's 50,000 (scaled up in the projection)
        menest_over = {"dataset": "fake:classes=100,size=128,train=10000,test=1000", "epochs": 2}

    def digits():
        over = {"epochs": 1, "model_kwargs": DRY_RUN_GHOSTMIXNET} if ctx.dry_run else {}
        out = _train_cell(ctx, "quickstart", over, "digits")
        out["learned"] = (out["test_top1"] or 0) >= (10 if ctx.dry_run else 90)
        out["train_images"] = 1_293  # quickstart: 1,437 training digits less the 10% validation split
        return out

    rec.cell("digits", digits)  # first: the cheapest, and the one that says the GPU path learns
    rec.cell("ghostmixnet-cifar10", lambda: {**_train_cell(ctx, "ghostmixnet-cifar10", ghostmixnet_over,
                                                            "ghostmixnet"),
                                             "train_images": 50_000 if not ctx.dry_run else 64})
    rec.cell("menest-cifar100", lambda: {**_train_cell(ctx, "menest-cifar100", menest_over, "menest"),
                                         "train_images": 9_500 if not ctx.dry_run else 61})


# ------------------------------------------------------------------------------------------------------ project
def step_project(ctx: Ctx, rec: Record) -> None:
    """GPU images/s of the training step of every Table 5 model (batch 32, 256x256) and of the four GhostMixNet
    ablation rows (batch 128, 32x32), bf16 autocast, channels_last: as the recipes train them."""
    from ghostnest.train import resolve_config

    if ctx.dry_run:
        jobs = [("menest_ghost_s", 32, 2, 100, {"stages": DRY_RUN_MENEST["stages"], "num_features": 32}),
                ("ghostmixnet-cifar10", 16, 2, 10, DRY_RUN_GHOSTMIXNET)]
    else:
        jobs = [(m, 256, 32, 100, None) for m in TABLE5["models"]]
        jobs += [(r, 32, 128, 10, None) for r in ABLATION["recipes"]]
        jobs += [(m, 256, 32, 100, size_kwargs(m, 256) or None) for m in FUTURE]
    for name, size, batch, classes, kw in jobs:
        def run(name=name, size=size, batch=batch, classes=classes, kw=kw):
            from ghostnest.bench import bench_models

            model = resolve_config(name).model if name.startswith("ghostmixnet-") else name
            rows = bench_models([model], input_size=size, batch=batch, mode="train", device=ctx.device,
                                dtype=ctx.choose("bf16", "fp32"), channels_last=not ctx.dry_run,
                                repeats=ctx.choose(10, 2), warmup=ctx.choose(3, 1), num_classes=classes,
                                model_kwargs=kw)
            r = rows[0]
            return {"model": model, "input_size": size, "batch": batch, "median_ms": r["median_ms"],
                    "images_per_s": r["images_per_s"], "params": r["params"], "peak_mem_mb": r["peak_mem_mb"]}
        rec.cell(name, run)


# ----------------------------------------------------------------------------------------------------- pipeline
def step_pipeline(ctx: Ctx, rec: Record) -> None:
    """Images/s of each recipe's whole input pipeline alone (no model), at the recipe's worker count and at more,
    and with the augmentation on the GPU (``augment_on: device``, per image and in groups of 16)."""
    from ghostnest.bench import bench_data

    cpus = os.cpu_count() or 1
    if ctx.dry_run:
        jobs = [("ghostmixnet-cifar10", ["dataset=fake:classes=10,size=32,train=64,test=8", "batch_size=16"], [0])]
    else:
        ghostmixnet_over = ["dataset=fake:classes=10,size=32,train=8192,test=16"]
        jobs = [("menest-cifar100", ["dataset=fake:classes=100,size=128,train=4096,test=16"], [None, cpus])]
        jobs += [(r, ghostmixnet_over, [None, max(cpus // 2, 2)]) for r in ABLATION["recipes"]]
    for recipe, over, worker_counts in jobs:
        for w in worker_counts:
            key = f"{recipe}/workers={'recipe' if w is None else w}"
            rec.cell(key, lambda recipe=recipe, over=over, w=w: bench_data(
                recipe, over, batches=ctx.choose(30, 2), warmup=ctx.choose(3, 1), device=ctx.device, workers=w))
        # the same ops run on the batch on the GPU (augment_on: device), per image and in groups of 16
        for group in ctx.choose((1, 16), (4,)) if recipe in ("ghostmixnet-cifar10", "menest-cifar100") else ():
            rec.cell(f"{recipe}/device-augment group={group}", lambda recipe=recipe, over=over, group=group: bench_data(
                recipe, [*over, "augment_on=device", f"augment_group={group}"], batches=ctx.choose(30, 2),
                warmup=ctx.choose(3, 1), device=ctx.device))


# ---------------------------------------------------------------------------------------------------------- ddp
def _metrics(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def step_ddp(ctx: Ctx, rec: Record) -> None:
    """torchrun --nproc_per_node 1 (nccl on CUDA, gloo in a dry run) with sync_bn: an uninterrupted run; the same
    run stopped by SIGTERM inside epoch 2 and resumed under torchrun; final weights compared tensor by tensor."""
    if ctx.dry_run:
        sets = [DRY_RUN_GHOSTMIXNET_SET, "dataset=fake:classes=4,size=16,train=1500,test=32", "batch_size=16", "threads=1"]
    else:
        sets = ["dataset=fake:classes=10,size=32,train=20000,test=512", "batch_size=64"]
    sets += ["epochs=3", "val_fraction=0.05", "workers=0", "sync_bn=true", "augment=[]", "mixup_alpha=0",
             "cutmix_alpha=0"]
    args = [a for s in sets for a in ("--set", s)] + ["--device", ctx.device.split(":")[0], "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    from ghostnest.train.distributed import child_pids, torchrun_train_command

    def torchrun(*extra):
        return torchrun_train_command(list(extra), nproc=1)

    new = ["--recipe", "quickstart", *args]
    # each torchrun job's limit: ~30 s expected on a GPU (start-up, 3 short epochs), so a rank that hangs costs at
    # most this much of a short GPU run; the CPU dry run's gloo ranks on a loaded 2-core machine get longer
    limit = ctx.choose(120, 300)

    def run():
        import torch

        from ghostnest.train.checkpoint import read_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            full, part = Path(tmp) / "full", Path(tmp) / "part"
            t = time.monotonic()
            p = subprocess.run(torchrun(*new, "--out", str(full)), capture_output=True, text=True, timeout=limit,
                               env=env)
            out = {"full_rc": p.returncode, "full_s": round(time.monotonic() - t, 1)}
            if p.returncode:
                return {**out, "ok": False, "stderr": p.stderr[-3000:]}
            proc = subprocess.Popen(torchrun(*new, "--out", str(part)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
            deadline = time.monotonic() + limit
            while not (part / "last.state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the end of epoch 1
            time.sleep(0.3 if not ctx.dry_run else 0.2)
            workers = child_pids(proc.pid)
            sent = bool(workers) and proc.poll() is None
            for w in workers:
                os.kill(w, signal.SIGTERM)  # the training process itself, as a scheduler's preemption would
            _, err = proc.communicate(timeout=limit)
            m = re.search(r"SIGTERM: saved a checkpoint at ([^;]+);", err)
            out.update(sigterm_sent=sent, stop_rc=proc.returncode, stopped_at=m.group(1) if m else None)
            if not m:
                return {**out, "ok": False, "stderr": err[-3000:]}
            p = subprocess.run(torchrun("--resume", str(part), "--device", ctx.device.split(":")[0], "--quiet"),
                               capture_output=True, text=True, timeout=limit, env=env)
            out["resume_rc"] = p.returncode
            if p.returncode:
                return {**out, "ok": False, "stderr": p.stderr[-3000:]}
            wa, _ = read_checkpoint(full / "last.safetensors")
            wb, _ = read_checkpoint(part / "last.safetensors")
            diffs = {k: (wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].numel()}
            worst = max(diffs.values()) if diffs else 0.0
            exact = all(torch.equal(wa[k], wb[k]) for k in wa)
            ma, mb = _metrics(full), _metrics(part)
            res = json.loads((part / "results.json").read_text())
            return {**out, "ok": exact, "exact": exact, "max_abs_weight_diff": worst, "metrics_equal": ma == mb,
                    "world_size": res.get("world_size"), "sync_bn": res.get("sync_bn"), "device": res.get("device")}

    rec.cell("sigterm_resume", run)


# ------------------------------------------------------------------------------------------------------ profile
def _profile_one(ctx: Ctx, name: str, mode: str, batch: int, size: int, classes: int, kw: dict | None) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    import ghostnest

    dev = torch.device(ctx.device)
    cuda = dev.type == "cuda"
    model = ghostnest.create_model(name, num_classes=classes, **(kw or {})).to(dev)
    mf = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=mf)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=mf)
    y = torch.randint(0, classes, (batch,), device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda)
    if mode == "infer":
        model = ghostnest.fuse(model.eval())

        def step():
            with torch.inference_mode(), amp:
                model(x)
    else:
        opt = torch.optim.AdamW(model.parameters())
        model.train()

        def step():
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(ctx.choose(3, 1)):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()

    def dev_time(e):
        if cuda:
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        return e.self_cpu_time_total

    total = sum(dev_time(e) for e in events) or 1.0
    top = sorted(events, key=dev_time, reverse=True)[:15]
    return {"model": name, "mode": mode, "batch": batch, "input_size": size, "clock": "cuda" if cuda else "cpu",
            "top": [{"name": e.key[:120], "self_ms": dev_time(e) / 1e3 / ctx.choose(3, 1), "share": dev_time(e) / total,
                     "calls": e.count} for e in top]}


def step_profile(ctx: Ctx, rec: Record) -> None:
    """torch.profiler top kernels of the cells that matter: every speed cell that missed its target (from
    cuda-speed.json), else the S pair at batch 128 in both modes; and GhostMixNet's training step."""
    jobs = []
    if ctx.dry_run:
        jobs = [("menest_ghost_s", "train", 2, 32, 10, {"stages": DRY_RUN_MENEST["stages"], "num_features": 32}),
                ("ghostmixnet", "train", 2, 16, 10, DRY_RUN_GHOSTMIXNET)]
    else:
        speed = read_json(ctx.path("speed")) or {}
        missed = [k for k, c in speed.get("cells", {}).items() if c.get("met") is False]
        for key in (missed or ["s/infer/b128", "s/train/b128"])[:4]:
            size, mode, b = key.split("/")
            for name in (f"menest_ghost_{size}", f"efficientnetv2_{size}"):
                jobs.append((name, mode, int(b[1:]), 256, 100, None))
        jobs.append(("ghostmixnet", "train", 128, 32, 10, None))
    for name, mode, batch, size, classes, kw in jobs:
        rec.cell(f"{name}/{mode}/b{batch}", lambda a=(name, mode, batch, size, classes, kw): _profile_one(ctx, *a))


def step_render(ctx: Ctx, rec: Record | None = None) -> None:
    """docs/benchmarks.md's GPU section (:func:`gpu_page.render`) and the summary table, from the results files."""
    from ghostnest.fileio import write_marked_block

    descriptions = {name: what for name, (_, _, what) in STEPS.items() if name != "render"}
    write_marked_block(ctx.doc, "gpu", render(ctx, descriptions))
    say(summary(ctx, {name: budget for name, (_, budget, _) in STEPS.items() if name != "render"}))
    missing = [k for k in descriptions if not (read_json(ctx.path(k)) or {}).get("complete")]
    say(f"wrote the GPU section of {ctx.doc}" + (f"; missing: {', '.join(missing)}" if missing else "; complete"))


# -------------------------------------------------------------------------------------------------------- steps
# name: (function, budget in seconds on one H100, what it measures). Budgets sum to under 25 minutes; each < 9.
# The order is the priority a short GPU run (--within) runs them in: the suite's CUDA cases, the speed targets, the
# distributed path, then training, its input and the projection; torch.compile's cells last.
STEPS = {
    "env": (step_env, 20, "versions, GPU, nvidia-smi"),
    "tests": (step_tests, 150, "the test suite's CUDA cases (`pytest -m cuda`): layers, fuse, train/resume, bf16"),
    "speed": (step_speed, 330, "ME-NeSt-Ghost vs EfficientNet-V2 S/M/L/XL, bf16, batch 128/256, infer + train"),
    "ddp": (step_ddp, 90, "torchrun nproc 1, nccl, sync_bn: SIGTERM, resume, weights compared"),
    "speed-ghostmix": (step_speed_ghostmix, 150, "GhostMixNet training throughput vs plain fp32 eager (target 2.5x)"),
    "train": (step_train, 210, "real training, both recipes on fake data of the real shape, digits learning check"),
    "pipeline": (step_pipeline, 90, "input pipeline images/s of both recipes and the ablation rows"),
    "project": (step_project, 120, "training-step images/s of the Table 5 models, the 4 ablation rows and the "
                "future-work models (projection)"),
    "profile": (step_profile, 90, "torch.profiler top kernels of the cells that miss their targets"),
    "mixconv": (step_mixconv, 30, "MixConv implementations in an ME-NeSt-Ghost-S training step (auto's GPU choice)"),
    "speed-compile": (step_speed_compile, 210, "the S/M ratio cells with torch.compile"),
    "render": (step_render, 5, "docs/benchmarks.md's GPU section and the summary table (any machine)"),
}


# What the steps import beyond torch and torchvision: import name -> package to install. The GPU machine's image may lack
# some (docs/gpu.md); the check names them all at once instead of failing in the middle of a step.
PACKAGES = {"timm": "timm", "sklearn": "scikit-learn", "yaml": "pyyaml", "tqdm": "tqdm", "safetensors": "safetensors",
            "matplotlib": "matplotlib", "pytest": "pytest", "hypothesis": "hypothesis"}


def missing_packages() -> list[str]:
    """The packages of :data:`PACKAGES` this Python cannot import."""
    return [pkg for module, pkg in PACKAGES.items() if importlib.util.find_spec(module) is None]


def share(ctx: Ctx, name: str, todo: list[str]) -> float:
    """Step ``name``'s time budget in seconds: its own, or under ``--within`` the share of the time left that its
    budget is of the budgets of ``todo`` (it and the steps after it), whichever is smaller. A step that finishes
    early leaves its time to the later ones."""
    own = STEPS[name][1]
    if ctx.deadline is None:
        return own
    return max(0.0, min(own, ctx.left() * own / sum(STEPS[n][1] for n in todo)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--step", action="append", choices=list(STEPS), help="run this step (repeatable); default: all")
    ap.add_argument("--list", action="store_true", help="list the steps with their time budgets and exit")
    ap.add_argument("--force", action="store_true", help="run a step again even if its results file is complete")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes (dryrun-*.json)")
    ap.add_argument("--device", default=None, help="cuda (default) or cpu (= --dry-run)")
    ap.add_argument("--within", type=float, metavar="MINUTES",
                    help="the whole invocation's time: the steps share it by their budgets, in priority order")
    ap.add_argument("--pack", type=Path, metavar="FILE.tar.gz",
                    help="at the end, however it ends, every results file in one .tar.gz (a short GPU run brings back <= 8 files)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    ap.add_argument("--doc", type=Path, default=DOC, help="the page whose GPU section render writes")
    args = ap.parse_args(argv)
    if args.list:
        total = 0
        for name, (_, budget, what) in STEPS.items():
            total += budget
            print(f"{name:<15} ~{budget / 60:4.1f} min  {what}")
        print(f"{'all':<15} ~{total / 60:4.1f} min on one H100 (each step < 9 min; run separately with --step NAME; "
              "in this order, each its share, with --within MINUTES)")
        return 0
    if args.within is not None and not args.within > 0:
        print(f"gpu_check: --within {args.within:g} must be a positive number of minutes (e.g. --within 8.5 for a "
              "15-minute GPU run, docs/gpu.md)", file=sys.stderr)
        return 2
    dry_run = args.dry_run or args.device == "cpu"
    device = "cpu" if dry_run else (args.device or "cuda")
    steps = [n for n in STEPS if n in (args.step or STEPS)]  # always in priority order
    deadline = None if args.within is None else time.monotonic() + args.within * 60
    ctx = Ctx(device, dry_run, args.results, args.doc, args.force, deadline)
    if steps == ["render"]:
        step_render(ctx)
        return 0
    missing = missing_packages()
    if missing:
        v = sys.version_info
        print(f"gpu_check: this Python ({sys.executable}, {v.major}.{v.minor}) lacks {', '.join(missing)}; download "
              f"their wheels here with `pip download --no-deps --only-binary=:all: --python-version {v.major}.{v.minor} "
              f"-d .whl {' '.join(missing)}`, carry .whl and install them there (docs/gpu.md)", file=sys.stderr)
        return 3
    import torch

    if not dry_run and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              "run it on a GPU machine (docs/gpu.md), or --dry-run for the tiny CPU mode", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    if dry_run:
        torch.set_num_threads(1)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        with deadline_alarm(None if deadline is None else args.within * 60 + GRACE_S):
            run_steps(ctx, steps, args.force)
    except Deadline:  # between two cells: every finished cell is saved already
        say(f"stopped: the --within time and its {GRACE_S} s of grace are spent")
    finally:
        if args.pack:
            say(f"packed {pack(ctx, args.pack)} results file(s) into {args.pack}")
    return 0


def run_steps(ctx: Ctx, steps: list[str], force: bool) -> None:
    todo = [n for n in steps if n != "render" and (force or not (read_json(ctx.path(n)) or {}).get("complete"))]
    for name in steps:
        fn, budget, what = STEPS[name]
        if name == "render":
            step_render(ctx)
            continue
        if name not in todo:
            say(f"[{name}] skipped: {ctx.path(name)} is complete (--force to run it again)")
            continue
        if ctx.left() <= 0:
            say(f"[{name}] not started: the --within time is spent (run again to continue)")
            continue
        scale = 10 if ctx.dry_run else 1
        mine = share(ctx, name, todo[todo.index(name):])
        say(f"[{name}] {what}; budget ~{mine / 60:.1f} min" + (f" of its {budget / 60:.1f}" if mine < budget else "")
            + (" (dry run)" if ctx.dry_run else ""))
        rec = Record(ctx, name, mine * scale, nominal_s=budget * scale)
        try:
            fn(ctx, rec)
        except Deadline:  # raised past the deadline, so no later step starts
            rec.finish()
            say(f"[{name}] stopped: the --within time and its {GRACE_S} s of grace are spent -> {rec.path}")
            continue
        d = rec.finish()
        errors = [k for k, c in d["cells"].items() if "error" in c]
        say(f"[{name}] {'done' if d['complete'] else 'partial (budget reached)'} in {d['elapsed_s']:.0f}s"
            + (f"; errors in {', '.join(errors)}" if errors else "") + f" -> {rec.path}")


if __name__ == "__main__":
    sys.exit(main())
