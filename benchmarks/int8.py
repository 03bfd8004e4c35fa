"""The "Deployment: int8" table of docs/benchmarks.md: fp32 and int8 ONNX files side by side.

    python benchmarks/int8.py RUN_DIR [--out DIR] [--repeats N] [--doc docs/benchmarks.md]

RUN_DIR is a quickstart run (`make run`: GhostMixNet on digits). For it: the fused fp32 export and the
``--int8`` export, their size on disk, digits test top-1 (and predictions changed against the fp32 checkpoint),
latency and images/s in onnxruntime at batch 1 and 32 with 1 thread and with every core, interleaved with the
fused network in PyTorch. Then ME-NeSt-Ghost-S, EfficientNet-V2-S (untrained, as registered) and ME-NeSt-Ghost-S
with ReLU in place of Mish (the architecture without its float activation) at 128x128: size
and batch-1 latency of fp32 and int8 files (calibrated on random images: the latency does not depend on the
weights). With ``--doc`` the section is written into that file (replacing an earlier one).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from ghostnest.fileio import write_marked_block

SECTION = "## Deployment: int8"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def ghostmixnet_rows(run: Path, out: Path, repeats: int, say) -> dict:
    from ghostnest.bench.model_files import bench_model_files
    from ghostnest.export import export
    from ghostnest.train.evaluate import evaluate_model_file

    fp32, int8 = out / "ghostmixnet.onnx", out / "ghostmixnet.int8.onnx"
    say("exporting fp32 and int8")
    export(run, "onnx", fp32, fuse=True)
    export(run, "onnx", int8, int8=True)
    acc = {p.name: evaluate_model_file(p, run, out_dir=out) for p in (fp32, int8)}
    timing = {}
    for threads in (1, None):
        for batch in (1, 32):
            say(f"timing batch {batch}, threads {threads or 'all'}")
            rows = bench_model_files([fp32, int8], batch=batch, threads=threads,
                                     repeats=repeats if batch == 1 else max(5, repeats // 4), warmup=3)
            timing[f"b{batch}_t{threads or 'all'}"] = [{k: r[k] for k in ("name", "median_ms", "images_per_s",
                                                                           "iqr_ms", "threads", "batch")}
                                                       for r in rows]
    return {"files": {p.name: p.stat().st_size for p in (fp32, int8)}, "accuracy": acc, "timing": timing}


PAPER_SIZE = 128  # input of the ME-NeSt-Ghost-S / EfficientNet-V2-S rows


def calibration_images() -> torch.Tensor:
    """The 32 random calibration images of the untrained paper models (only their latency is measured)."""
    return torch.randn(32, 3, PAPER_SIZE, PAPER_SIZE, generator=torch.Generator().manual_seed(0))


def paper_model_files(name: str, out: Path) -> tuple[Path, Path]:
    """fp32 and int8 ONNX files of the untrained model ``name`` at 128x128 in ``out``: the fp32 file as
    ``ghostnest export NAME --format onnx --fuse`` writes it, quantized as ``--int8`` does on
    :func:`calibration_images`. ``menest_ghost_s_relu`` is ME-NeSt-Ghost-S with ReLU in place of Mish."""
    import ghostnest
    from ghostnest.export import export, export_model
    from ghostnest.quantize import quantize_onnx

    fp32, int8 = out / f"{name}-{PAPER_SIZE}.onnx", out / f"{name}-{PAPER_SIZE}.int8.onnx"
    if name == "menest_ghost_s_relu":
        model = ghostnest.create_model("menest_ghost_s", act="relu").eval()
        export_model(ghostnest.fuse(model, fast_mish=False, runtime="onnxruntime"), "onnx", fp32, PAPER_SIZE,
                     {"model": "menest_ghost_s", "model_kwargs": {"act": "relu"}, "num_classes": 100})
    else:
        export(name, "onnx", fp32, input_size=PAPER_SIZE, fuse=True)
    quantize_onnx(fp32, int8, calibration_images())
    return fp32, int8


def paper_model_rows(out: Path, repeats: int, say) -> dict:
    """fp32 and int8 files of ME-NeSt-Ghost-S and EfficientNet-V2-S at 128x128, plus ME-NeSt-Ghost-S with ReLU in
    place of Mish (not the paper's network: it shows what the architecture costs without its float Mish)."""
    from ghostnest.bench.model_files import bench_model_files

    files = []
    for name in ("menest_ghost_s", "efficientnetv2_s", "menest_ghost_s_relu"):
        say(f"exporting {name} at {PAPER_SIZE}x{PAPER_SIZE}")
        files += paper_model_files(name, out)
    say("timing batch 1, 1 thread")
    rows = bench_model_files(files, batch=1, threads=1, repeats=repeats, warmup=3, with_torch=False)
    return {"files": {f.name: f.stat().st_size for f in files},
            "timing": [{k: r[k] for k in ("name", "median_ms", "images_per_s", "iqr_ms")} for r in rows]}


def markdown(res: dict) -> str:
    g = res["ghostmixnet"]
    lines = [SECTION, "",
             f"Measured by `python benchmarks/int8.py RUN_DIR` on {res['cpu']} ({res['cores']} cores, no VNNI), "
             f"onnxruntime {res['onnxruntime']}, torch {res['torch']}, {res['date']}; the machine was shared, so "
             "every row is the median of interleaved rounds. fp32 = `ghostnest export RUN --format onnx --fuse`, "
             "int8 = `ghostnest export RUN --format onnx --int8` (defaults: 512 calibration images, MinMax, "
             "classifier and Mish in float; docs/deployment.md). The torch row is the same fused network in "
             "PyTorch (its top-1 is the checkpoint's); with 2 threads on this shared 2-core machine PyTorch's "
             "OpenMP threads wait on each other, hence its slow 2-thread rows.", "",
             "**GhostMixNet** (quickstart run, digits, 32x32; top-1 on the 360-image digits test split):", "",
             "| file | size | test top-1 | predictions changed | threads | batch | latency (ms) | images/s "
             "| vs fp32 onnxruntime |", "|---|---|---|---|---|---|---|---|---|"]
    acc = g["accuracy"]
    names = list(g["files"])
    for rows in g["timing"].values():
        base = next(r for r in rows if r["name"].startswith(names[0]))
        for r in rows:
            fname = next((n for n in names if r["name"].startswith(n)), None)
            if fname:
                a = acc[fname]
                size, top1, diff = _mb(g["files"][fname]), f"{a['top1']:.2f}%", str(a["predictions_differ"])
            else:
                top1 = f"{acc[names[0]]['checkpoint_top1']:.2f}%"
                size, diff = "-", "-"
            lines.append(f"| {r['name']} | {size} | {top1} | {diff} | {r['threads']} | {r['batch']} | "
                         f"{r['median_ms']:.2f} | {r['images_per_s']:.0f} | "
                         f"{r['images_per_s'] / base['images_per_s']:.2f}x |")
    p = res["paper_models"]
    lines += ["", "**ME-NeSt-Ghost-S and EfficientNet-V2-S** at 128x128 (untrained weights, 100 classes; batch 1, "
              "1 thread, onnxruntime). `menest_ghost_s_relu` is ME-NeSt-Ghost-S with ReLU in place of Mish: not the "
              "paper's network, it shows what the architecture costs without its float Mish (docs/deployment.md, "
              "\"ME-NeSt-Ghost-S: the bound\"):", "", "| file | size | latency (ms) | images/s |", "|---|---|---|---|"]
    for r in p["timing"]:
        fname = r["name"].split(" ")[0]
        lines.append(f"| {fname} | {_mb(p['files'][fname])} | {r['median_ms']:.2f} | {r['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a quickstart run directory (GhostMixNet on digits)")
    ap.add_argument("--out", type=Path, default=None, help="where the exported files and results.json go")
    ap.add_argument("--repeats", type=int, default=40, help="timed rounds at batch 1 (a quarter at batch 32)")
    ap.add_argument("--doc", type=Path, default=None, help="write the section into this markdown file")
    ap.add_argument("--skip-paper-models", action="store_true", help="GhostMixNet only")
    ap.add_argument("--from-results", type=Path, default=None, metavar="JSON",
                    help="render an earlier run's results.json instead of measuring")
    args = ap.parse_args(argv)
    if args.from_results:
        res = json.loads(args.from_results.read_text())
    else:
        res = measure(args, lambda msg: print(msg, file=sys.stderr, flush=True))
    text = markdown(res)
    print(text)
    if args.doc:
        write_marked_block(args.doc, "int8", text)
    return 0


def measure(args, say) -> dict:
    """Export, quantize and time everything; the results also go to OUT/results.json."""
    import onnxruntime

    from ghostnest.bench import cpu_model

    out = args.out or Path(tempfile.mkdtemp(prefix="ghostnest-int8-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    res = {"cpu": cpu_model() or platform.processor(), "cores": torch.get_num_threads(),
           "onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0],
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    res["ghostmixnet"] = ghostmixnet_rows(args.run, out, args.repeats, say)
    res["paper_models"] = {"files": {}, "timing": []} if args.skip_paper_models else \
        paper_model_rows(out, args.repeats, say)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(main())
