"""The ``ghostnest`` command line: one subcommand per task, each a small function over the library.

Every subcommand is registered in ``COMMANDS`` below by an ``add_<name>_parser`` function. A mistake by the user
(bad name, bad file, bad value) raises ``ValueError``/``OSError`` inside the library; ``main`` turns it into a
one-line ``error: ...`` message and exit status 2, never a bare traceback.

Start-up: the ``ghostnest`` console script (``ghostnest_launcher``) loads this file without importing the package
(which imports torch and timm), so that ``--version`` and ``--help`` answer at once. Hence the one rule of this
file: nothing at module level and nothing in an ``add_*_parser`` function imports another ghostnest module (or
torch); the ``_cmd_*`` functions import what they need (tests/test_startup.py checks it).
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (0 must not silently mean "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _cmd_models(args: argparse.Namespace) -> int:
    rows = model_rows(args.pattern, args.num_classes)
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r}; run `ghostnest models` to list them all")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<24} {'family':<15} {'classes':>7} {'params':>14} {'paper':>7} {'GFLOPs':>8} {'input':>6}")
    for r in rows:
        paper = f"{r['paper_params_m']:g}M" if r["paper_params_m"] else "-"
        print(
            f"{r['name']:<24} {r['family']:<15} {r['num_classes']:>7} {r['params']:>14,} {paper:>7} "
            f"{r['gflops']:>8.3f} {r['input_size']:>6}"
        )
    print("params counted at the paper's class count; GFLOPs per image (multiply-add = 2 FLOPs) at the input size")
    return 0


def model_rows(pattern: str = "*", num_classes: int | None = None) -> list[dict]:
    """``ghostnest.stats.model_stats`` of every model matching ``pattern``, from a cache where it holds them.

    Counting needs the package (torch, timm) and a pass of FlopCounterMode per model (seconds for the large ones);
    the figures depend only on the package's source, torch's and timm's versions and the class count, so they are
    kept in ``CACHE/models-CLASSES.json`` under a key made of exactly those (:func:`_models_cache_key`): an edit to
    any model file, or another torch or timm, recounts. CACHE is ``$GHOSTNEST_CACHE``, else
    ``$XDG_CACHE_HOME/ghostnest`` or ``~/.cache/ghostnest``; a cache that cannot be written is skipped."""
    path = _cache_dir() / f"models-{num_classes or 'paper'}.json"
    key = _models_cache_key()
    cache: dict = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):  # missing, unreadable or not this package's
        loaded = json.loads(path.read_text())
        if loaded.get("key") == key:
            cache = loaded
    rows = cache.get("rows", {})
    if "names" in cache:
        want = [n for n in cache["names"] if fnmatch.fnmatch(n, pattern)]
        if all(n in rows for n in want):
            return [rows[n] for n in want]
    from .fileio import atomic_write_text
    from .registry import list_models
    from .stats import model_stats

    want = list_models(pattern)
    for name in want:
        if name not in rows:
            rows[name] = model_stats(name, num_classes)
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({"key": key, "names": list_models(), "rows": rows}) + "\n")
    return [rows[n] for n in want]


def _cache_dir() -> Path:
    root = os.environ.get("GHOSTNEST_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ghostnest"


def _models_cache_key() -> str:
    """A hash of everything ``ghostnest models`` figures depend on: every source file of the package (its models,
    layers, registry, counting code) and the installed torch and timm versions."""
    from importlib import metadata

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for f in sorted(package.rglob("*.py")):
        digest.update(f"{f.relative_to(package)}\0".encode() + f.read_bytes() + b"\0")
    for dist in ("torch", "timm"):
        try:
            digest.update(f"{dist}=={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist} not installed\0".encode())
    return digest.hexdigest()


def add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list every model: parameters, GFLOPs, default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'menest*'")
    p.add_argument("--num-classes", type=positive_int, default=None, help="class count (default: the paper's)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, params, gflops, input_size}")
    p.set_defaults(func=_cmd_models)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_command, environment, format_data, format_table, spread_warning

    progress = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    kind, rows = bench_command(
        args.models, model_files=args.model_file, data=args.data, overrides=args.set, workers=args.workers,
        batch=args.batch, repeats=args.repeats, warmup=args.warmup, threads=args.threads, device=args.device,
        progress=progress, input_size=args.input, mode=args.mode, dtype=args.dtype, channels_last=args.channels_last,
        compile=args.compile, num_classes=args.num_classes, fuse=args.mode == "infer" and not args.no_fuse,
        runtime=args.runtime, **({"grad_checkpointing": True} if args.grad_checkpointing else {}))
    if kind == "data":
        print(json.dumps(rows, indent=2) if args.json else format_data(rows))
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        env = environment(args.device)
        print(format_table(rows))
        where = env["gpu"] or f"{env['cpu']}, {env['usable_cores']} cores"
        print(f"{where}; torch {env['torch']}; {env['date_utc']}", flush=True)
    warning = spread_warning(rows)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time models interleaved in one process: latency, images/s, peak memory, ratio to the first",
        description="Time MODELs interleaved (round robin after warm-up) in one process and report the median and "
        "spread of the time per batch, images/s, peak memory, parameters, GFLOPs per image and each model's "
        "median relative to the first model's.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered model names (see `ghostnest models`)")
    p.add_argument("--input", type=int, default=None, help="square input size (default: the first model's paper size)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 8; with --data the recipe's)")
    p.add_argument("--mode", choices=["infer", "train"], default="infer",
                   help="infer: eval forward under inference_mode; train: forward + CE loss + backward + AdamW step")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile each model (compile time not in the median)")
    p.add_argument("--no-fuse", action="store_true",
                   help="infer mode: time the plain models; by default every model runs through ghostnest.fuse "
                   "(BN folded, MixConv merged, fast Mish; timm's EfficientNet-V2 folded the same way)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: also time each model's ONNX export in onnxruntime (CPU, fp32 inference)")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="train mode: also time each model with gradient checkpointing (rows 'NAME +grad-ckpt'): peak "
                   "memory and step time with and without")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per model (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default 2, at least 1)")
    p.add_argument("--num-classes", type=int, default=None, help="class count (default: the first model's paper's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's, one per core)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {name, params, gflops, median_ms, images_per_s, ratio_to_first, ...}")
    p.add_argument("--model-file", action="append", default=[], metavar="FILE.onnx",
                   help="time an exported ONNX file (fp32 or int8) in onnxruntime, interleaved with the first file's "
                   "network in PyTorch (repeatable; batch default 1)")
    g = p.add_argument_group("input pipeline (--data)")
    g.add_argument("--data", metavar="RECIPE", default=None,
                   help="time RECIPE's training input pipeline alone (augmentation, batching, Mixup/CutMix; no model):"
                   " --repeats batches after --warmup batches")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set dataset=fake:size=32,train=4096 (repeatable)")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the recipe's)")
    p.set_defaults(func=_cmd_bench)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    result = write_report(args.run_dirs, args.out, analyse=not args.no_eval, device=args.device, check=args.check)
    print(f"wrote {result['html']}, {result['table']}, {', '.join(str(p) for p in result['figures'])}, "
          f"{len(result['curves'])} curve plot(s), {result['json']}" + (
              " (checked in headless Chromium)" if args.check else ""))
    for run, problems in result["problems"].items():
        print(f"warning: run {run}: {'; '.join(problems)}", file=sys.stderr)
    for run in result["no_results"]:
        if run not in result["problems"]:
            print(f"warning: run {run} has no results yet (no results.json): reported without test accuracy",
                  file=sys.stderr)
    for run, problem in result["analysis_problems"].items():
        print(f"note: run {run}: no per-class accuracy, confusion matrix or worst images ({problem})", file=sys.stderr)
    return 0


def add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="results table against the papers (Table 5), Figure 7 and training curves from run directories",
        description="Read RUN_DIRs written by `ghostnest train` and write DIR/index.html (one self-contained page: "
        "everything below plus per run its per-class accuracy, confusion matrix, worst-classified test images with "
        "their class activation maps and its recipe), DIR/table.md (the papers' tables with our numbers beside "
        "them), DIR/figure7.png/.svg (top-1 against parameters) and DIR/curves/<run>.png.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (none: the paper rows only)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--no-eval", action="store_true",
                   help="do not evaluate each run's best checkpoint on its test split (no per-class accuracy, "
                   "confusion matrix or worst images in index.html)")
    p.add_argument("--device", default="cpu", help="where the runs' checkpoints are evaluated (default cpu)")
    p.add_argument("--check", action="store_true",
                   help="render index.html in headless Chromium afterwards; exit 2 on a missing image, a script "
                   "error or an empty section (needs chromium installed)")
    p.set_defaults(func=_cmd_report)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train_command

    res = train_command(args.recipe, args.set, out=args.out, resume=args.resume, auto_resume=args.auto_resume,
                        device=args.device, data_dir=args.data_dir, progress=not args.quiet, qat=args.qat)
    if res is None:  # --auto-resume of a finished run: nothing to do
        return 0
    if "signal" in res:  # SIGTERM (preemption) saved a checkpoint: a clean exit; SIGINT (Ctrl-C): 130, as usual
        return 0 if res["signal"] == "SIGTERM" else 130
    if res.get("rank", 0) == 0:  # under torchrun only rank 0 reports
        print(f"{res['run_dir']}: {res['model']} on {res['dataset']}, test top-1 {res['test_top1']:.2f}% "
              f"top-5 {res['test_top5']:.2f}% (best epoch {res['best_epoch']}/{res['epochs']})")
    return 0


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model with a paper recipe into a run directory (see `ghostnest recipes`)",
        description="Train with a recipe (a paper experiment, `ghostnest recipes`) and write RUN_DIR/config.yaml, "
        "metrics.csv, last/best checkpoints, results.json and curves.png. See docs/training.md. On many GPUs: "
        "torchrun --nproc_per_node N -m ghostnest train ... (docs/distributed.md). SIGTERM saves a checkpoint and "
        "exits 0, Ctrl-C saves and exits 130; --resume continues.")
    p.add_argument("--recipe", default=None, help="recipe name or path to a .yaml (default: quickstart)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set epochs=5 --set model=efficientnetv2_s "
                   "--set model_kwargs.drop_rate=0.1 (repeatable)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<recipe>-<time>)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run where it stopped")
    p.add_argument("--auto-resume", action="store_true",
                   help="with --out: continue RUN_DIR if it holds a checkpoint, else start it (for job scripts that "
                   "are requeued after a preemption; see docs/distributed.md)")
    p.add_argument("--qat", default=None, metavar="RUN_DIR",
                   help="quantization-aware fine-tuning: continue RUN_DIR's best weights with fake int8 quantization "
                   "(2 epochs at a tenth of its lr unless --set) into --out (default RUN_DIR-qat), then export that "
                   "run with --int8 (docs/deployment.md)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data folder (default $GHOSTNEST_DATA or ./data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_cmd_train)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .train.config import config_to_dict, list_recipes, resolve_config
    from .train.model import recipe_model_options

    if args.action is None:
        recipes = list_recipes()
        if args.json:
            print(json.dumps(recipes, indent=2))
        else:
            for name, desc in recipes.items():
                print(f"{name:<34} {desc}")
        return 0
    if args.action == "preview":
        return _cmd_recipes_preview(args)
    if args.action != "show" or not args.name:
        raise ValueError("usage: ghostnest recipes [show NAME [--set KEY=VALUE ...] [--json]]")
    resolved = resolve_config(args.name, args.set)
    cfg = {**config_to_dict(resolved), "model_options": recipe_model_options(resolved)}
    print(json.dumps(cfg, indent=2) if args.json else __import__("yaml").safe_dump(cfg, sort_keys=False), end="")
    if args.json:
        print()
    return 0


def _cmd_recipes_preview(args: argparse.Namespace) -> int:
    from .train.preview import write_preview

    if not args.name or not args.out:
        raise ValueError("usage: ghostnest recipes preview RECIPE --out FILE.png [--set KEY=VALUE ...] "
                         "[--data-dir DIR] [--samples N]")
    r = write_preview(args.name, args.out, args.set, data_dir=args.data_dir, samples=args.samples)
    print(f"wrote {r['path']}: {r['samples']} {r['dataset']} training samples of recipe {r['recipe']} "
          f"({', '.join(r['columns'])})")
    return 0


def add_recipes_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list the paper recipes, show one fully resolved, or preview its augmentation",
                       description="List the recipes, `show NAME` with --set overrides applied and checked, or "
                       "`preview NAME --out FILE.png`: training samples through the recipe's own input pipeline "
                       "(per-image augmentation, then Mixup and CutMix with their mixed labels), drawn as the first "
                       "batch of epoch 1.")
    p.add_argument("action", nargs="?", choices=["show", "preview"], help="show or preview one recipe")
    p.add_argument("name", nargs="?", help="recipe name (with show or preview)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", default=None, metavar="FILE.png", help="preview: the image to write")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="preview: data folder (default $GHOSTNEST_DATA "
                   "or ./data)")
    p.add_argument("--samples", type=positive_int, default=6, help="preview: training samples shown (default 6)")
    p.set_defaults(func=_cmd_recipes)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.model_file:
        from .train.evaluate import evaluate_model_file

        r = evaluate_model_file(args.model_file, args.run, dataset=args.dataset, data_dir=args.data_dir,
                                batch_size=args.batch_size or 64, out_dir=args.out, which=args.which,
                                threads=args.threads)
    else:
        from .train.evaluate import evaluate_checkpoint

        r = evaluate_checkpoint(args.run, dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                batch_size=args.batch_size, out_dir=args.out, which=args.which, threads=args.threads)
    for note in r["notes"]:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    if args.model_file:
        what = f"{r['model_file']} ({r['precision']}, onnxruntime)"
    else:
        step = f", step {r['step']} of epoch {r['epoch'] + 1}" if r["step"] else ""
        what = f"{r['model']} ({r['weights']}: epoch {r['epoch']}{step})" if r["epoch"] is not None else r["model"]
    print(f"{what} on {r['dataset']} ({r['images']} test images): top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%")
    for name, acc in r["per_class_top1"].items():
        print(f"  {name:<24} {acc:6.2f}%")
    if args.model_file:
        print(f"{r['predictions_differ']} of {r['images']} test predictions differ from the fp32 checkpoint's "
              f"(checkpoint top-1 {r['checkpoint_top1']:.2f}%)")
    print(f"confusion matrix: {r['confusion_png']}")
    return 0


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint",
                       description="Evaluate a checkpoint (or a run directory's best.safetensors, else its "
                       "last.safetensors) on a test split; with --model-file, an exported fp32 or int8 .onnx file of "
                       "it (run by onnxruntime on the CPU), counting the test predictions that differ from the "
                       "checkpoint's. An unfinished run (no results.json) is named as such, with the weights used.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--checkpoint", dest="which", choices=["best", "last"], default=None,
                   help="which weights of a run directory: best (the best validation epoch) or last (the latest "
                   "save, perhaps mid-epoch); default best, or last while the run has no best yet")
    p.add_argument("--model-file", default=None, metavar="FILE.onnx",
                   help="evaluate this exported .onnx file (fp32 or --int8) instead, with the run's test data; its "
                   "classes and input size must match the run's")
    p.add_argument("--dataset", default=None,
                   help="data set (default: the one it was trained on); results on another one go to "
                   "eval-DATASET.json and confusion-DATASET.png, and class names that differ are named")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data folder (default $GHOSTNEST_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per evaluation batch (default 64 on the CPU, 256 on a GPU)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the run's recipe's `threads`, else one per core)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where confusion.png/eval.json go (default: beside it; with --model-file FILE.onnx, "
                   "FILE.confusion.png/FILE.eval.json beside the file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .train.evaluate import predict

    rows = predict(args.checkpoint, args.images, out=args.out, device=args.device, threads=args.threads)
    print(f"wrote {len(rows)} predictions to {args.out}")
    return 0


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint or .onnx file -> CSV (ID,label,name,confidence)",
                       description="Classify images with the preprocessing stored in the checkpoint (or in the "
                       "exported file's metadata).")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a .safetensors checkpoint, a run directory, or an exported fp32 or int8 .onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the run's recipe's `threads`, else one per core)")
    p.set_defaults(func=_cmd_predict)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    batch = int(args.batch) if args.batch.isdigit() else args.batch  # export() checks it: "dynamic" or >= 1
    if args.calib_images is not None and args.calib_images < 1:
        raise ValueError(f"--calib-images {args.calib_images} must be a positive number of images")
    path = export(args.source, args.format, args.out, args.input, batch, fuse=args.fuse, int8=args.int8,
                  calib_images=args.calib_images, calib_method=args.calib_method, float_layers=args.float_layers,
                  data_dir=args.data_dir)
    if args.int8:
        from .export import read_metadata

        q = read_metadata(path)["int8"]
        c = q["calibration"]
        floats = ", ".join(q["float_layers"]) or "none"
        print(f"wrote {path} (onnx int8 QDQ, batch {batch}; calibrated on {c['images']} {c['dataset']} training "
              f"images, {c['method']}; float layers: {floats})")
    elif args.format == "hub":
        print(f"wrote {path}/ (config.json, model.safetensors, README.md): "
              f"timm.create_model(\"local-dir:{path}\", pretrained=True) loads it")
    else:
        print(f"wrote {path} ({args.format}, batch {batch})")
    return 0


EXPORT_FORMATS = ("onnx", "torch-export", "safetensors", "hub")  # ghostnest.export.FORMATS (tests/test_startup.py)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint or model to ONNX, torch.export, safetensors or a hub folder")
    p.add_argument("source", help="checkpoint (.safetensors), run directory, hub folder, or a model name (untrained)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", required=True, help="output file (.onnx, .pt2 or .safetensors), or with --format hub a new "
                   "folder (config.json, model.safetensors, README.md) for timm's hub loader")
    p.add_argument("--input", type=positive_int, default=None,
                   help="input size (default: the checkpoint's or model's)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--fuse", action="store_true", help="export the fused inference model (ghostnest.fuse: BN folded)")
    g = p.add_argument_group("int8 (post-training static quantization, docs/deployment.md)")
    # The defaults below are ghostnest.quantize's (DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_METHOD, DEFAULT_FLOAT_LAYERS,
    # 7-bit weights: REDUCE_RANGE), written out so that --help imports nothing; tests/test_startup.py compares them.
    g.add_argument("--int8", action="store_true",
                   help="with --format onnx: fuse, calibrate on the run's training split (its eval preprocessing) and "
                   "write an int8 QDQ file (per-channel weights on a 7-bit grid, [-64, 64], which onnxruntime's int8 "
                   "kernels on CPUs without VNNI do not overflow; docs/deployment.md); needs a run directory or "
                   "checkpoint")
    g.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="calibration images drawn from the run's training split (default 512)")
    g.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default=None,
                   help="activation range calibration (default minmax)")
    g.add_argument("--float-layers", default=None, metavar="GROUPS",
                   help="layer groups kept in float, comma-separated from se, classifier, attention, mish, or "
                   "'none' (default: classifier,mish)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="data folder holding the run's data set (default: the run's, $GHOSTNEST_DATA or ./data)")
    p.set_defaults(func=_cmd_export)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain

    r = explain(args.checkpoint, args.images, args.out, method=args.method, target=args.target, layer=args.layer,
                device=args.device, batch_size=args.batch_size)
    for rec in r["images"]:
        top = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in rec["top5"])
        print(f"{rec['image']}: {top}")
    print(f"wrote {len(r['files'])} map(s) ({r['method']}, layer {r['layer']}), {r['grid']} and {r['json']}")
    return 0


EXPLAIN_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam", "ablationcam")  # ghostnest.explain.METHODS


def add_explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain", help="class activation maps (Grad-CAM, ...) of a checkpoint on images -> PNGs and a grid",
        description="Draw where a trained model looks: for each image, the class activation map of its predicted "
        "class (and of --target CLASS) over the image, with the top-5 predictions in the title; plus DIR/grid.png "
        "of all of them and DIR/explain.json. Maps from the grad-cam package (pip install 'ghostnest[explain]'). "
        "The default layer is the model's last stage (docs/explain.md).")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--method", default="gradcam", metavar="METHOD",
                   help=f"one of {', '.join(EXPLAIN_METHODS)} (default gradcam; eigencam, scorecam and ablationcam use no "
                   "gradients)")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="also draw the map of this class (a class name or index) for every image")
    p.add_argument("--layer", default=None, metavar="MODULE",
                   help="target layer by module name, e.g. stages.1 (default: the last stage)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    p.set_defaults(func=_cmd_explain)


COMMANDS = [add_models_parser, add_bench_parser, add_report_parser, add_train_parser, add_recipes_parser,
            add_eval_parser, add_predict_parser, add_export_parser, add_explain_parser]


def package_version() -> str:
    """ghostnest's ``__version__``, read from ``ghostnest/__init__.py`` when the package is not imported."""
    if "ghostnest" in sys.modules and hasattr(sys.modules["ghostnest"], "__version__"):
        return sys.modules["ghostnest"].__version__
    text = (Path(__file__).resolve().parent / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostnest", description="ME-NeSt-Ghost and GhostMixNet: build, train, evaluate, benchmark."
    )
    parser.add_argument("--version", action="version", version=f"ghostnest {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ghostnest models | head`: the reader left; no error line, no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
