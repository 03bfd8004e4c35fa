"""The ``ghostnest`` command line: one subcommand per task, each a small function over the library.

Every subcommand is registered in ``COMMANDS`` below by an ``add_<name>_parser`` function. A mistake by the user
(bad name, bad file, bad value) raises ``ValueError``/``OSError`` inside the library; ``main`` turns it into a
one-line ``error: ...`` message and exit status 2, never a bare traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


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
    from .registry import list_models
    from .stats import model_stats

    rows = [model_stats(n, args.num_classes) for n in list_models(args.pattern)]
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


def add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list every model: parameters, GFLOPs, default input size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'menest*'")
    p.add_argument("--num-classes", type=positive_int, default=None, help="class count (default: the paper's)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, params, gflops, input_size}")
    p.set_defaults(func=_cmd_models)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_command, environment, format_data, format_table

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
        return 0
    env = environment(args.device)
    print(format_table(rows))
    where = env["gpu"] or f"{env['cpu']}, {env['usable_cores']} cores"
    print(f"{where}; torch {env['torch']}; {env['date_utc']}")
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

    result = write_report(args.run_dirs, args.out)
    print(f"wrote {result['table']}, {', '.join(str(p) for p in result['figures'])}, "
          f"{len(result['curves'])} curve plot(s), {result['json']}")
    for run, problems in result["problems"].items():
        print(f"warning: run {run}: {'; '.join(problems)}", file=sys.stderr)
    return 0


def add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="results table against the papers (Table 5), Figure 7 and training curves from run directories",
        description="Read RUN_DIRs written by `ghostnest train` and write DIR/table.md (the papers' tables with our "
        "numbers beside them), DIR/figure7.png/.svg (top-1 against parameters) and DIR/curves/<run>.png.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (none: the paper rows only)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
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
    from .train.config import config_to_dict, list_recipes, recipe_model_options, resolve_config

    if args.action is None:
        recipes = list_recipes()
        if args.json:
            print(json.dumps(recipes, indent=2))
        else:
            for name, desc in recipes.items():
                print(f"{name:<34} {desc}")
        return 0
    if args.action != "show" or not args.name:
        raise ValueError("usage: ghostnest recipes [show NAME [--set KEY=VALUE ...] [--json]]")
    resolved = resolve_config(args.name, args.set)
    cfg = {**config_to_dict(resolved), "model_options": recipe_model_options(resolved)}
    print(json.dumps(cfg, indent=2) if args.json else __import__("yaml").safe_dump(cfg, sort_keys=False), end="")
    if args.json:
        print()
    return 0


def add_recipes_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list the paper recipes, or show one fully resolved",
                       description="List the recipes, or `show NAME` with --set overrides applied and checked.")
    p.add_argument("action", nargs="?", choices=["show"], help="show one recipe")
    p.add_argument("name", nargs="?", help="recipe name (with show)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_recipes)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.model_file:
        from .train.evaluate import evaluate_model_file

        r = evaluate_model_file(args.model_file, args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                                batch_size=args.batch_size, out_dir=args.out)
    else:
        from .train.evaluate import evaluate_checkpoint

        r = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                batch_size=args.batch_size, out_dir=args.out)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    what = f"{r['model_file']} ({r['precision']}, onnxruntime)" if args.model_file else r["model"]
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
                       description="Evaluate a checkpoint (or a run directory's best.safetensors) on a test split; "
                       "with --model-file, an exported fp32 or int8 .onnx file of it (run by onnxruntime on the CPU), "
                       "counting the test predictions that differ from the checkpoint's.")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--model-file", default=None, metavar="FILE.onnx",
                   help="evaluate this exported .onnx file (fp32 or --int8) instead, with the run's test data; its "
                   "classes and input size must match the run's")
    p.add_argument("--dataset", default=None, help="data set (default: the one it was trained on)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data folder (default $GHOSTNEST_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per evaluation batch (default 256)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where confusion.png/eval.json go (default: beside it; with --model-file FILE.onnx, "
                   "FILE.confusion.png/FILE.eval.json beside the file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .train.evaluate import predict

    rows = predict(args.checkpoint, args.images, out=args.out, device=args.device)
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
    p.set_defaults(func=_cmd_predict)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    batch = args.batch if args.batch == "dynamic" else _positive_int(args.batch, "--batch")
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


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{flag} {text!r} must be 'dynamic' or a positive integer")
    return value


def add_export_parser(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser("export", help="export a checkpoint or model to ONNX, torch.export, safetensors or a hub folder")
    p.add_argument("source", help="checkpoint (.safetensors), run directory, hub folder, or a model name (untrained)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file (.onnx, .pt2 or .safetensors), or with --format hub a new "
                   "folder (config.json, model.safetensors, README.md) for timm's hub loader")
    p.add_argument("--input", type=positive_int, default=None,
                   help="input size (default: the checkpoint's or model's)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--fuse", action="store_true", help="export the fused inference model (ghostnest.fuse: BN folded)")
    g = p.add_argument_group("int8 (post-training static quantization, docs/deployment.md)")
    g.add_argument("--int8", action="store_true",
                   help="with --format onnx: fuse, calibrate on the run's training split (its eval preprocessing) and "
                   "write an int8 QDQ file (per-channel int8 weights); needs a run directory or checkpoint")
    g.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="calibration images drawn from the run's training split (default 512)")
    g.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default=None,
                   help="activation range calibration (default minmax)")
    g.add_argument("--float-layers", default=None, metavar="GROUPS",
                   help="layer groups kept in float, comma-separated from se, classifier, attention, mish, or "
                   "'none' (default: classifier)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="data folder holding the run's data set (default: the run's, $GHOSTNEST_DATA or ./data)")
    p.set_defaults(func=_cmd_export)


COMMANDS = [add_models_parser, add_bench_parser, add_report_parser, add_train_parser, add_recipes_parser,
            add_eval_parser, add_predict_parser, add_export_parser]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ghostnest", description="ME-NeSt-Ghost and GhostMixNet: build, train, evaluate, benchmark."
    )
    parser.add_argument("--version", action="version", version=f"ghostnest {__version__}")
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
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
