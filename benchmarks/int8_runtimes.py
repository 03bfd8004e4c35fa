"""ME-NeSt-Ghost-S against EfficientNet-V2-S, fp32 and int8, on three CPU runtimes: batch 1, 128x128, 1 thread.

The int8 target "ME-NeSt-Ghost-S no slower than EfficientNet-V2-S" is missed in onnxruntime (docs/deployment.md,
"ME-NeSt-Ghost-S: the bound"). This script asks whether another runtime changes that, timing both networks the
same way in each:

- **onnxruntime**: the files ``ghostnest export NAME --format onnx --fuse`` and ``--int8`` write (the project's
  deployment path; calibrated on random images here, the networks being untrained).
- **inductor**: the fused network (``ghostnest.fuse``) through ``torch.compile`` with frozen weights; int8 is
  PyTorch's export-based quantization (``prepare_pt2e``/``convert_pt2e`` with the X86 inductor quantizer, from
  torchao), which inductor lowers to oneDNN int8 convolutions and fuses the elementwise operators around them.
- **openvino**: the same two ONNX files as onnxruntime, compiled by OpenVINO's CPU plugin (which reads QDQ int8).

torchao and openvino are not installed by the two commands: ``.venv/bin/pip install -e ".[runtimes]"`` adds them
(pyproject.toml pins the versions measured); a runtime that is missing is skipped with a line. Every case is built first, then all are timed interleaved (:mod:`ghostnest.bench.loop`). The weights are
random (seed 0); latency does not depend on them.

    .venv/bin/python benchmarks/int8_runtimes.py --doc docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ghostnest.fileio import atomic_write_text, write_marked_block

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # int8.py: the same files and calibration images as its table
from int8 import PAPER_SIZE as SIZE  # noqa: E402
from int8 import calibration_images, paper_model_files  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cpu-int8-runtimes.json"
MODELS = ("menest_ghost_s", "efficientnetv2_s")


def onnxruntime_steps(files: dict, x: torch.Tensor) -> dict:
    import onnxruntime as ort

    from ghostnest.bench.runtimes import session_step

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return {key: session_step(ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]), x)
            for key, f in files.items()}


def openvino_steps(files: dict, x: torch.Tensor) -> dict:
    import openvino as ov

    core, feed, steps = ov.Core(), x.numpy(), {}
    for key, f in files.items():
        request = core.compile_model(str(f), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                     "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        steps[key] = (lambda r: lambda: r.infer({0: feed}))(request)
    return steps


def inductor_steps(name: str, x: torch.Tensor) -> dict:
    """fp32 and int8 steps of the fused network compiled by inductor (weights frozen into the graph)."""
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    import ghostnest

    inductor_config.freezing = True
    torch.manual_seed(0)
    model = ghostnest.fuse(ghostnest.create_model(name).eval(), fast_mish=False, runtime="torch")
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
        for image in calibration_images():  # the exported graph is specialised to batch 1
            prepared(image[None])
        int8 = convert_pt2e(prepared)
    steps = {}
    for key, module in (("fp32", model), ("int8", int8)):
        compiled = torch.compile(module)
        steps[key] = (lambda m: lambda: m(x))(compiled)
    return steps


def measure(repeats: int, say) -> dict:
    from ghostnest.bench import cpu_model
    from ghostnest.bench.loop import Case, case_rows, first_call, interleave

    torch.set_num_threads(1)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    versions = {"torch": torch.__version__.split("+")[0]}
    cases, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="ghostnest-int8-runtimes-") as tmp:
        files = {}
        for name in MODELS:
            say(f"exporting {name} (fp32 and int8 ONNX)")
            files[name] = dict(zip(("fp32", "int8"), paper_model_files(name, Path(tmp)), strict=True))
        for runtime, package in (("onnxruntime", "onnxruntime"), ("inductor", "torchao"), ("openvino", "openvino")):
            if importlib.util.find_spec(package) is None:
                skipped.append(runtime)
                say(f"skipping {runtime}: {package} is not installed (pip install -e '.[runtimes]')")
                continue
            versions[package] = __import__(package).__version__
            for name in MODELS:
                say(f"building {name} in {runtime}")
                t0 = time.perf_counter()
                with torch.no_grad():
                    steps = (inductor_steps(name, x) if runtime == "inductor" else
                             onnxruntime_steps(files[name], x) if runtime == "onnxruntime" else
                             openvino_steps(files[name], x))
                    for dtype, step in steps.items():
                        cases.append(first_call(Case(f"{name} {dtype} [{runtime}]", step, extra={
                            "model": name, "dtype": dtype, "runtime": runtime})))
                say(f"  built and first-called in {time.perf_counter() - t0:.0f} s")
        say(f"timing {len(cases)} cases, {repeats} interleaved rounds")
        with torch.no_grad():
            interleave(cases, warmup=3, repeats=repeats)
    rows = case_rows(cases, batch=1, repeats=repeats, warmup=3, common={"threads": 1, "input_size": SIZE})
    return {"cpu": cpu_model(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "versions": versions,
            "skipped": skipped, "rows": [{k: r[k] for k in ("name", "model", "dtype", "runtime", "median_ms",
                                                           "iqr_ms", "min_ms", "first_call_ms")} for r in rows]}


def markdown(res: dict) -> str:
    by = {(r["model"], r["dtype"], r["runtime"]): r for r in res["rows"]}
    runtimes = list(dict.fromkeys(r["runtime"] for r in res["rows"]))
    v = res["versions"]
    lines = ["## Deployment: int8 on three CPU runtimes", "",
             f"Measured by `python benchmarks/int8_runtimes.py` on {res['cpu']}, {res['date']}: torch {v['torch']}"
             + "".join(f", {k} {str(val).split('-')[0]}" for k, val in v.items() if k != "torch")
             + ". Batch 1, 128x128, 1 thread, untrained weights (100 classes), median ms of interleaved rounds. "
             "Same ONNX files for onnxruntime and OpenVINO (`ghostnest export --fuse` and `--int8`); inductor runs "
             "the fused network with `torch.compile`, int8 by PT2E quantization (torchao's X86 inductor "
             "quantizer). The ratio is ME-NeSt-Ghost-S over EfficientNet-V2-S in the same runtime and precision; "
             "the target is at most 1.0 in int8.", "",
             "| runtime | ME-NeSt-Ghost-S fp32 | EfficientNet-V2-S fp32 | ratio | ME-NeSt-Ghost-S int8 | "
             "EfficientNet-V2-S int8 | ratio |", "|---|---|---|---|---|---|---|"]
    for rt in runtimes:
        cells = []
        for dtype in ("fp32", "int8"):
            a, b = by.get(("menest_ghost_s", dtype, rt)), by.get(("efficientnetv2_s", dtype, rt))
            cells += [f"{a['median_ms']:.1f}" if a else "-", f"{b['median_ms']:.1f}" if b else "-",
                      f"{a['median_ms'] / b['median_ms']:.2f}x" if a and b else "-"]
        lines.append(f"| {rt} | " + " | ".join(cells) + " |")
    if res["skipped"]:
        lines += ["", "Not measured (package not installed): " + ", ".join(res["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=40, help="timed interleaved rounds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results JSON (default: %(default)s)")
    ap.add_argument("--doc", type=Path, default=None, help="write the table into this markdown file")
    ap.add_argument("--from-results", type=Path, default=None, metavar="JSON",
                    help="render an earlier run's results instead of measuring")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.from_results:
        res = json.loads(args.from_results.read_text())
    else:
        res = measure(args.repeats, say)
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
        say(f"wrote {args.out}")
    text = markdown(res)
    print(text)
    if args.doc:
        write_marked_block(args.doc, "int8-runtimes", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
