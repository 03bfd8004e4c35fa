"""Verify and measure everything on the GPU that is present: one command, in resumable steps of under 9 minutes.

    python benchmarks/gpu_check.py                 # every step not done yet, then `render`
    python benchmarks/gpu_check.py --within 8.5 --pack OUT/cuda-results.tar.gz   # a short lease: all steps, by
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

``--within MINUTES`` is for a GPU lease shorter than the steps' budgets (docs/gpu.md): the steps run in the order of
:data:`STEPS` (their priority), each with the share of the minutes left that its budget is of the budgets left, so
every step measures its first cells and the rest resume in a later lease; at the deadline no step or cell starts,
and a cell still running 45 s after it is stopped (recorded as not run) so the command ends on time. ``--pack
FILE`` writes every results file into one ``.tar.gz`` at the end, however the run ended (a lease returns at most
8 files).

Without CUDA (and without ``--dry-run``/``--device cpu``) the script says so in one line and exits 2.
docs/gpu.md says how a session with a lent GPU sets up and runs it.
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
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"  # the section's markers in docs/benchmarks.md
sys.path.insert(0, str(ROOT / "benchmarks"))  # plain_ghostmixnet

SIZES = ("s", "m", "l", "xl")
TARGETS = {"infer": 1.2, "train": 1.5, "ghostmix_train_vs_plain": 2.5}
TABLE5 = {"images": 47_500, "val": 2_500, "epochs": 100, "recipe": "menest-cifar100",
          "models": [f"menest_ghost_{s}" for s in SIZES] + [f"efficientnetv2_{s}" for s in SIZES]}
ABLATION = {"images": 50_000, "val": 10_000, "epochs": 200,
            "recipes": ["ghostmixnet-cifar10-resnet", "ghostmixnet-cifar10-resnet-se", "ghostmixnet-cifar10-ghost-se",
                        "ghostmixnet-cifar10"]}
TINY_GMN = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1}
TINY_GMN_SET = "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}"
TINY_MENEST = {"stages": [["ms", 1, 8, 1, 1], ["ms_ghost", 2, 16, 2, 2]], "num_features": 32}
# The ME-NeSt-Ghost paper's future work (section 6; docs/training.md): each model -> the ME-NeSt-Ghost size it is
# matched to. `speed` times each against its match (after the Table 5 cells), `project` and the projection each
# run of the `menest-cifar100` recipe. CoAtNet is built for the input size (img_size, ghostnest/models/coatnet.py).
FUTURE = {"menest_ghost_tsa_s": "menest_ghost_s", "menest_ghost_tsa_m": "menest_ghost_m",
          "menest_ghost_resnet_s": "menest_ghost_s", "menest_ghost_resnet_m": "menest_ghost_m",
          "convnext_nano": "menest_ghost_s", "convnext_tiny": "menest_ghost_s", "convnext_small": "menest_ghost_m",
          "coatnet_nano_rw_224": "menest_ghost_s", "coatnet_0_rw_224": "menest_ghost_s",
          "coatnet_1_rw_224": "menest_ghost_m", "coatnet_2_rw_224": "menest_ghost_m"}
TINY_FUTURE = ("menest_ghost_tsa_s", "coatnet_nano_rw_224")  # the dry run's share: one of ours, one fixed-size


def future_kwargs(model: str, size: int) -> dict:
    return {"img_size": size} if model.startswith("coatnet") else {}


# ------------------------------------------------------------------------------------------------ the context
class Deadline(BaseException):
    """``--within``'s time plus :data:`GRACE_S` is spent: raised (by SIGALRM) inside whatever cell is running. A
    BaseException, so that a cell's error handling does not record it as the cell's error and go on."""


GRACE_S = 45  # --within: how long a cell that started before the deadline may run past it


class Ctx:
    """Where a step runs and how big it may be: ``tiny`` (CPU dry run) shrinks every size to seconds;
    ``deadline`` (``time.monotonic()``, from ``--within``) is when no step or cell may start any more."""

    def __init__(self, device: str, tiny: bool, results: Path, doc: Path, force: bool,
                 deadline: float | None = None):
        self.device, self.tiny, self.results, self.doc, self.force = device, tiny, results, doc, force
        self.prefix = "dryrun" if tiny else "cuda"
        self.deadline = deadline

    def left(self) -> float:
        """Seconds until the deadline (infinite without ``--within``)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def path(self, step: str) -> Path:
        return self.results / f"{self.prefix}-{step}.json"

    def pick(self, real, tiny):
        return tiny if self.tiny else real


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict) -> None:
    """Atomic: a temporary file in the same folder, then rename (a killed step leaves the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Record:
    """One step's results file: cells keyed by name, saved after each; ``over_budget`` says when to stop."""

    def __init__(self, ctx: Ctx, step: str, budget_s: float, nominal_s: float | None = None):
        self.ctx, self.step, self.path, self.budget_s = ctx, step, ctx.path(step), budget_s
        self.nominal_s = budget_s if nominal_s is None else nominal_s  # the step's own budget (before --within)
        old = None if ctx.force else read_json(self.path)
        self.data = old if old and not old.get("complete") else {"step": step, "cells": {}}
        self.data.update(device=ctx.device, dry_run=ctx.tiny, complete=False, started=now(), budget_s=budget_s)
        self.data.setdefault("cells", {})
        self.t0 = time.monotonic()
        self.left: list[str] = []

    def done(self, key: str) -> bool:
        return key in self.data["cells"] and "not_run" not in self.data["cells"][key]

    def over_budget(self, key: str) -> bool:
        why = ("the --within time is spent" if self.ctx.left() <= 0 else
               "step time budget reached" if time.monotonic() - self.t0 > self.budget_s else None)
        if why:
            self._not_run(key, f"{why}; run the step again to continue")
            return True
        return False

    def _not_run(self, key: str, why: str) -> None:
        """Cell ``key`` left for the step's next run (the step stays incomplete)."""
        self.left.append(key)
        self.data["cells"][key] = {"not_run": why}
        self.save()

    def kill_after(self, extra_s: float = 60) -> float:
        """A timeout for a step's one indivisible job (a subprocess): its own budget plus ``extra_s``, cut to what
        ``--within`` leaves (a job killed at its timeout gives nothing, so a shortened share does not shorten it)."""
        return max(1.0, min(self.nominal_s + extra_s, self.ctx.left() + GRACE_S))

    def put(self, key: str, value: dict) -> None:
        self.data["cells"][key] = value
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def finish(self, **extra) -> dict:
        self.data.update(extra)
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.data["finished"] = now()
        self.data["complete"] = not self.left
        self.save()
        return self.data

    def cell(self, key: str, fn) -> dict | None:
        """Run ``fn()`` for cell ``key`` unless it is done or the budget is spent; errors are recorded, not raised."""
        if self.done(key):
            return self.data["cells"][key]
        if self.over_budget(key):
            return None
        say(f"  {self.step}: {key}")
        t = time.monotonic()
        try:
            value = fn()
        except Deadline:
            self._not_run(key, "the --within time ran out during this cell; run the step again")
            raise
        except Exception as exc:  # noqa: BLE001  (one failed cell must not lose the others)
            value = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"}
            _empty_cache()
        value = {**value, "cell_s": round(time.monotonic() - t, 1)}
        self.put(key, value)
        return value


def say(msg: str) -> None:
    print(msg, flush=True)


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    if ctx.tiny:
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
                        dtype=ctx.pick("bf16", "fp32"), channels_last=not ctx.tiny, compile=compile,
                        repeats=repeats or ctx.pick(6, 2), warmup=ctx.pick(2, 1), num_classes=num_classes,
                        fuse=fuse, model_kwargs=model_kwargs)
    keep = ("name", "mode", "dtype", "batch", "input_size", "channels_last", "compiled", "fused", "params", "gflops",
            "median_ms", "p25_ms", "p75_ms", "images_per_s", "peak_mem_mb", "first_call_ms")
    return {r["name"]: {k: r.get(k) for k in keep} for r in rows}


def _pair_cells(ctx: Ctx, rec: Record, compile: bool) -> None:
    sizes = ctx.pick(SIZES if not compile else ("s", "m"), ("s",))
    batches = ctx.pick((128, 256) if not compile else (128,), (2,))
    image = ctx.pick(256, 32)
    for batch in batches:  # every size at the first batch before any at the second: a short lease gets S-XL first
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
    rec.data["setup"] = {"input_size": image, "dtype": ctx.pick("bf16", "fp32"), "channels_last": not ctx.tiny,
                         "fused_infer": not compile, "compiled": compile,
                         "ratio": "median time per batch, ME-NeSt-Ghost / EfficientNet-V2 (timm) of the same size"}


def step_speed(ctx: Ctx, rec: Record) -> None:
    """ME-NeSt-Ghost S/M/L/XL vs EfficientNet-V2 S/M/L/XL, bf16, channels_last, batch 128 and 256, 256x256:
    inference fused (both sides, ``ghostnest.fuse``), training step eager; then each future-work model against
    the ME-NeSt-Ghost it is matched to (:data:`FUTURE`), batch 128."""
    _pair_cells(ctx, rec, compile=False)
    image, batch = ctx.pick(256, 32), ctx.pick(128, 2)
    for model in ctx.pick(tuple(FUTURE), TINY_FUTURE):
        for mode in ("infer", "train"):
            def run(model=model, mode=mode):  # two calls: CoAtNet's img_size is an option the other side refuses
                ours = _bench([model], ctx=ctx, size=image, batch=batch, mode=mode, fuse=mode == "infer",
                              model_kwargs=future_kwargs(model, image))[model]
                theirs = _bench([FUTURE[model]], ctx=ctx, size=image, batch=batch, mode=mode,
                                fuse=mode == "infer")[FUTURE[model]]
                return {"ours": ours, "theirs": theirs, "ratio": ours["median_ms"] / theirs["median_ms"],
                        "target": None, "met": None}
            rec.cell(f"{model}/{mode}/b{batch}", run)


def step_speed_compile(ctx: Ctx, rec: Record) -> None:
    """The same cells with ``torch.compile`` on both sides (S and M, batch 128: each compile takes minutes).
    A dry run times them eagerly (compiling on the CPU takes minutes)."""
    _pair_cells(ctx, rec, compile=not ctx.tiny)


def step_speed_ghostmix(ctx: Ctx, rec: Record) -> None:
    """GhostMixNet training throughput vs the plain fp32 eager version (benchmarks/plain_ghostmixnet.py)."""
    import torch

    import ghostnest
    from ghostnest.bench import bench_variants
    from plain_ghostmixnet import PlainGhostMixNet

    batch = ctx.pick(128, 4)
    common = dict(input_size=32, batch=batch, num_classes=10, mode="train", device=ctx.device,
                  repeats=ctx.pick(20, 2), warmup=ctx.pick(3, 1))

    def one(model_fn, dtype, cl):
        rows = bench_variants([("m", model_fn())], dtype=dtype, channels_last=cl, **common)
        return {k: rows[0].get(k) for k in ("median_ms", "p25_ms", "p75_ms", "images_per_s", "first_call_ms")}

    kw = ctx.pick({}, TINY_GMN)
    rec.cell("plain_fp32_eager", lambda: one(PlainGhostMixNet, "fp32", False))
    rec.cell("ours_fp32_eager", lambda: one(lambda: ghostnest.create_model("ghostmixnet", num_classes=10, **kw),
                                            "fp32", False))
    low = ctx.pick("bf16", "fp32")
    rec.cell("ours_bf16_cl", lambda: one(lambda: ghostnest.create_model("ghostmixnet", num_classes=10, **kw), low,
                                         not ctx.tiny))
    if not ctx.tiny:  # compiling on the CPU takes minutes: not in a dry run
        rec.cell("ours_bf16_cl_compiled", lambda: one(
            lambda: torch.compile(ghostnest.create_model("ghostmixnet", num_classes=10)), "bf16", True))
    base = rec.data["cells"].get("plain_fp32_eager", {}).get("images_per_s")
    if base:
        best = max((c.get("images_per_s") or 0, k) for k, c in rec.data["cells"].items() if k != "plain_fp32_eager")
        rec.data["speedup"] = {"best": best[1], "ratio": best[0] / base, "target": TARGETS["ghostmix_train_vs_plain"],
                               "met": best[0] / base >= TARGETS["ghostmix_train_vs_plain"]}


# ------------------------------------------------------------------------------------------------------ mixconv
MIXCONV_TRAIN_IMPLS = ("split", "single", "repeat", "rowgrad")  # "matmul" is for tiny maps only (4x4 and below)


def step_mixconv(ctx: Ctx, rec: Record) -> None:
    """MixConv's implementation in training on the GPU: an ME-NeSt-Ghost-S training step (bf16, channels_last,
    256x256, batch 128) with every MixConv forced to each implementation, interleaved. ``impl="auto"`` trains with
    "split" on GPUs because the CPU's measured choices need not carry over; this says whether another is faster."""
    import torch

    import ghostnest
    from ghostnest.bench import bench_variants
    from ghostnest.layers.mixconv import MixConv2d

    kw = ctx.pick({}, {"stages": TINY_MENEST["stages"], "num_features": 32})

    def build(impl):
        torch.manual_seed(0)  # the same weights for every implementation
        model = ghostnest.create_model("menest_ghost_s", num_classes=100, **kw)
        for m in model.modules():
            if isinstance(m, MixConv2d):
                m.impl = impl
        return model

    batch = ctx.pick(128, 2)

    def run():
        rows = bench_variants([(impl, build(impl)) for impl in MIXCONV_TRAIN_IMPLS], input_size=ctx.pick(256, 32),
                              batch=batch, num_classes=100, mode="train", device=ctx.device,
                              dtype=ctx.pick("bf16", "fp32"), channels_last=not ctx.tiny, repeats=ctx.pick(6, 2),
                              warmup=ctx.pick(2, 1))
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
    if ctx.tiny:
        gmn = {"dataset": "fake:classes=10,size=16,train=64,test=16", "model_kwargs": TINY_GMN, "epochs": 1,
               "workers": 0, "batch_size": 16, "augment": []}
        men = {"dataset": "fake:classes=4,size=16,train=64,test=16", "model_kwargs": TINY_MENEST, "epochs": 1,
               "workers": 0, "batch_size": 16, "image_size": 32, "augment": []}
    else:
        # CIFAR-10's real count and size; the recipe as written apart from the data and the epoch count
        gmn = {"dataset": "fake:classes=10,size=32,train=50000,test=10000", "epochs": 2}
        # 128x128 stored, resized to the recipe's 256; a fifth of CIFAR-100's 50,000 (scaled up in the projection)
        men = {"dataset": "fake:classes=100,size=128,train=10000,test=1000", "epochs": 2}

    def digits():
        over = {"epochs": 1, "model_kwargs": TINY_GMN} if ctx.tiny else {}
        out = _train_cell(ctx, "quickstart", over, "digits")
        out["learned"] = (out["test_top1"] or 0) >= (10 if ctx.tiny else 90)
        out["train_images"] = 1_293  # quickstart: 1,437 training digits less the 10% validation split
        return out

    rec.cell("digits", digits)  # first: the cheapest, and the one that says the GPU path learns
    rec.cell("ghostmixnet-cifar10", lambda: {**_train_cell(ctx, "ghostmixnet-cifar10", gmn, "gmn"),
                                             "train_images": 50_000 if not ctx.tiny else 64})
    rec.cell("menest-cifar100", lambda: {**_train_cell(ctx, "menest-cifar100", men, "men"),
                                         "train_images": 9_500 if not ctx.tiny else 61})


# ------------------------------------------------------------------------------------------------------ project
def step_project(ctx: Ctx, rec: Record) -> None:
    """GPU images/s of the training step of every Table 5 model (batch 32, 256x256) and of the four GhostMixNet
    ablation rows (batch 128, 32x32), bf16 autocast, channels_last: as the recipes train them."""
    from ghostnest.train import resolve_config

    if ctx.tiny:
        jobs = [("menest_ghost_s", 32, 2, 100, {"stages": TINY_MENEST["stages"], "num_features": 32}),
                ("ghostmixnet-cifar10", 16, 2, 10, TINY_GMN)]
    else:
        jobs = [(m, 256, 32, 100, None) for m in TABLE5["models"]]
        jobs += [(r, 32, 128, 10, None) for r in ABLATION["recipes"]]
        jobs += [(m, 256, 32, 100, future_kwargs(m, 256) or None) for m in FUTURE]
    for name, size, batch, classes, kw in jobs:
        def run(name=name, size=size, batch=batch, classes=classes, kw=kw):
            from ghostnest.bench import bench_models

            model = resolve_config(name).model if name.startswith("ghostmixnet-") else name
            rows = bench_models([model], input_size=size, batch=batch, mode="train", device=ctx.device,
                                dtype=ctx.pick("bf16", "fp32"), channels_last=not ctx.tiny,
                                repeats=ctx.pick(10, 2), warmup=ctx.pick(3, 1), num_classes=classes,
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
    if ctx.tiny:
        jobs = [("ghostmixnet-cifar10", ["dataset=fake:classes=10,size=32,train=64,test=8", "batch_size=16"], [0])]
    else:
        gmn = ["dataset=fake:classes=10,size=32,train=8192,test=16"]
        jobs = [("menest-cifar100", ["dataset=fake:classes=100,size=128,train=4096,test=16"], [None, cpus])]
        jobs += [(r, gmn, [None, max(cpus // 2, 2)]) for r in ABLATION["recipes"]]
    for recipe, over, worker_counts in jobs:
        for w in worker_counts:
            key = f"{recipe}/workers={'recipe' if w is None else w}"
            rec.cell(key, lambda recipe=recipe, over=over, w=w: bench_data(
                recipe, over, batches=ctx.pick(30, 2), warmup=ctx.pick(3, 1), device=ctx.device, workers=w))
        # the same ops run on the batch on the GPU (augment_on: device), per image and in groups of 16
        for group in ctx.pick((1, 16), (4,)) if recipe in ("ghostmixnet-cifar10", "menest-cifar100") else ():
            rec.cell(f"{recipe}/device-augment group={group}", lambda recipe=recipe, over=over, group=group: bench_data(
                recipe, [*over, "augment_on=device", f"augment_group={group}"], batches=ctx.pick(30, 2),
                warmup=ctx.pick(3, 1), device=ctx.device))


# ---------------------------------------------------------------------------------------------------------- ddp
def _metrics(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def step_ddp(ctx: Ctx, rec: Record) -> None:
    """torchrun --nproc_per_node 1 (nccl on CUDA, gloo in a dry run) with sync_bn: an uninterrupted run; the same
    run stopped by SIGTERM inside epoch 2 and resumed under torchrun; final weights compared tensor by tensor."""
    if ctx.tiny:
        sets = [TINY_GMN_SET, "dataset=fake:classes=4,size=16,train=1500,test=32", "batch_size=16", "threads=1"]
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
    # most this much of a lease; the CPU dry run's gloo ranks on a loaded 2-core machine get longer
    limit = ctx.pick(120, 300)

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
            time.sleep(0.3 if not ctx.tiny else 0.2)
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
        for _ in range(ctx.pick(3, 1)):
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
            "top": [{"name": e.key[:120], "self_ms": dev_time(e) / 1e3 / ctx.pick(3, 1), "share": dev_time(e) / total,
                     "calls": e.count} for e in top]}


def step_profile(ctx: Ctx, rec: Record) -> None:
    """torch.profiler top kernels of the cells that matter: every speed cell that missed its target (from
    cuda-speed.json), else the S pair at batch 128 in both modes; and GhostMixNet's training step."""
    jobs = []
    if ctx.tiny:
        jobs = [("menest_ghost_s", "train", 2, 32, 10, {"stages": TINY_MENEST["stages"], "num_features": 32}),
                ("ghostmixnet", "train", 2, 16, 10, TINY_GMN)]
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


# ------------------------------------------------------------------------------------------------------- render
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
    men_over, men_cal = overhead("menest-cifar100", "menest_ghost_s", 9_500)
    for m in TABLE5["models"] + list(FUTURE):
        rows.append(_proj_row(m, "menest-cifar100", proj.get(m, {}), pipeline_rate("menest-cifar100"), TABLE5,
                              men_over, men_cal, options("menest-cifar100")))
    gmn_over, gmn_cal = overhead("ghostmixnet-cifar10", "ghostmixnet-cifar10", 50_000)
    for r in ABLATION["recipes"]:
        rows.append(_proj_row(r, r, proj.get(r, {}), pipeline_rate(r), ABLATION, gmn_over, gmn_cal, options(r)))
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


def render(ctx: Ctx) -> str:
    res = {name: read_json(ctx.path(name)) for name in STEPS if name != "render"}
    have = {k: v for k, v in res.items() if v}
    missing = [k for k in STEPS if k != "render" and not (res.get(k) or {}).get("complete")]
    L = ["## GPU check (benchmarks/gpu_check.py)", ""]
    label = "in a dry run on the CPU, tiny sizes: not GPU figures" if ctx.tiny else "with CUDA"
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
        L += [f"- `{k}`: {STEPS[k][2]}" for k in missing]
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


def summary(ctx: Ctx) -> str:
    rows = []
    for name, (_, budget, _what) in STEPS.items():
        if name == "render":
            continue
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


def step_render(ctx: Ctx, rec: Record | None = None) -> None:
    from ghostnest.fileio import write_marked_block

    write_marked_block(ctx.doc, "gpu", render(ctx))
    say(summary(ctx))
    missing = [k for k in STEPS if k != "render" and not (read_json(ctx.path(k)) or {}).get("complete")]
    say(f"wrote the GPU section of {ctx.doc}" + (f"; missing: {', '.join(missing)}" if missing else "; complete"))


# -------------------------------------------------------------------------------------------------------- steps
# name: (function, budget in seconds on one H100, what it measures). Budgets sum to under 25 minutes; each < 9.
# The order is the priority a short lease (--within) runs them in: the suite's CUDA cases, the speed targets, the
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


# What the steps import beyond torch and torchvision: import name -> package to install. A lent GPU image may lack
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


def pack(ctx: Ctx, dest: Path) -> int:
    """Every ``<prefix>-*.json`` results file into one gzipped tar at ``dest``, flat (untar into
    benchmarks/results/), written atomically; the number of files packed."""
    from ghostnest.fileio import atomic_path

    files = sorted(ctx.results.glob(f"{ctx.prefix}-*.json"))
    with atomic_path(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    return len(files)


def _on_alarm(_signum, _frame):
    raise Deadline()


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
                    help="at the end, however it ends, every results file in one .tar.gz (a lease returns <= 8 files)")
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
              "15-minute lease, docs/gpu.md)", file=sys.stderr)
        return 2
    tiny = args.dry_run or args.device == "cpu"
    device = "cpu" if tiny else (args.device or "cuda")
    steps = [n for n in STEPS if n in (args.step or STEPS)]  # always in priority order
    deadline = None if args.within is None else time.monotonic() + args.within * 60
    ctx = Ctx(device, tiny, args.results, args.doc, args.force, deadline)
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

    if not tiny and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              "run it on a GPU machine (docs/gpu.md), or --dry-run for the tiny CPU mode", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    if tiny:
        torch.set_num_threads(1)
    else:
        torch.backends.cudnn.benchmark = True
    if deadline is not None:
        old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, args.within * 60 + GRACE_S)
    try:
        run_steps(ctx, steps, args.force)
    except Deadline:  # between two cells: every finished cell is saved already
        say(f"stopped: the --within time and its {GRACE_S} s of grace are spent")
    finally:
        if deadline is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
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
        scale = 10 if ctx.tiny else 1
        mine = share(ctx, name, todo[todo.index(name):])
        say(f"[{name}] {what}; budget ~{mine / 60:.1f} min" + (f" of its {budget / 60:.1f}" if mine < budget else "")
            + (" (dry run)" if ctx.tiny else ""))
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
