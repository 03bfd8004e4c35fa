"""The ME-NeSt-Ghost paper's future-work models (section 6) on this CPU: one interleaved run per measurement.

Every new model (ConvNeXt and CoAtNet by timm, ME-NeSt-Ghost-TSA, ResNet-style ME-NeSt-Ghost) beside
ME-NeSt-Ghost-S and EfficientNet-V2-S, timed by ``ghostnest.bench.bench_models``, the function behind
``ghostnest bench`` and with its defaults (inference fused, interleaved rounds, medians), in three runs:

    ghostnest bench MODELS... --input 128 --batch 1 --threads 1              # inference, batch 1
    ghostnest bench MODELS... --input 128 --batch 8 --threads 1              # inference, batch 8
    ghostnest bench MODELS... --input 128 --batch 8 --threads 1 --mode train # one AdamW training step

Parameters (100 classes) and GFLOPs (per image, multiply-add = 2) are counted on the ``meta`` device. Ratios are
medians over ME-NeSt-Ghost-S's and EfficientNet-V2-S's medians in the same run.

    python benchmarks/future_work.py                # measure, write benchmarks/results/future-work/cpu.json and
                                                    # the section of docs/benchmarks.md between its markers
    python benchmarks/future_work.py --render-only  # the section again from the JSON
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ghostnest.bench import bench_models, environment  # noqa: E402
from ghostnest.fileio import atomic_write_text, write_marked_block  # noqa: E402
from ghostnest.report.paper import FUTURE_QUESTIONS, FUTURE_ROWS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "future-work" / "cpu.json"
DOC = ROOT / "docs" / "benchmarks.md"
REFERENCES = ("menest_ghost_s", "efficientnetv2_s")
MODELS = REFERENCES + tuple(f.model for f in FUTURE_ROWS)
RUNS = {"infer-b1": ("infer", 1), "infer-b8": ("infer", 8), "train-b8": ("train", 8)}


def measure(threads: int, repeats: int, warmup: int) -> dict:
    data = {"env": environment("cpu"), "threads": threads, "repeats": repeats, "warmup": warmup, "input_size": 128,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": {},
            "loadavg_start": os.getloadavg()[0]}
    for key, (mode, batch) in RUNS.items():
        start = time.time()
        rows = bench_models(MODELS, input_size=128, batch=batch, mode=mode, device="cpu", repeats=repeats,
                            warmup=warmup, threads=threads, fuse=mode == "infer", num_classes=100,
                            progress=lambda m, key=key: print(f"[{key}] {m}", file=sys.stderr, flush=True))
        data["runs"][key] = {"seconds": time.time() - start, "rows": rows}
    data["loadavg_end"] = os.getloadavg()[0]
    return data


def render(data: dict) -> str:
    runs = data["runs"]
    by = {key: {r["name"]: r for r in run["rows"]} for key, run in runs.items()}
    any_rows = by["infer-b8"]
    env = data["env"]
    lines = ["## The ME-NeSt-Ghost paper's future work: the new models on this CPU", "",
             f"Measured {data['date']} on {env.get('cpu', 'this CPU')} ({env.get('cpu_count', '?')} cores, shared "
             f"with other jobs: load average {data['loadavg_start']:.1f} at the start, {data['loadavg_end']:.1f} at "
             f"the end), torch {env.get('torch')}, "
             f"{data['threads']} thread, input 128x128, 100 classes, by `python benchmarks/future_work.py`: three "
             "`ghostnest bench` runs (inference fused at batch 1 and 8, an AdamW training step at batch 8), "
             f"every model interleaved with the others, {data['repeats']} timed rounds after {data['warmup']} "
             "warm-up; medians in ms. The machine is shared, so absolute times move from run to run; the ratios "
             "within a run (same rounds, same load) are the figures to read. Ratios are to ME-NeSt-Ghost-S (S) and "
             "EfficientNet-V2-S (E) of the same run.", "",
             "| question | model | params | GFLOPs | infer b1 ms | / S | / E | infer b8 ms | / S | / E "
             "| train step b8 ms | / S | / E |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    question = {f.model: f"{f.question}" for f in FUTURE_ROWS}
    for name in MODELS:
        cells = []
        for key in RUNS:
            r = by[key].get(name)
            s, e = by[key].get("menest_ghost_s"), by[key].get("efficientnetv2_s")
            if r is None:
                cells += ["missing", "", ""]
                continue
            cells += [f"{r['median_ms']:,.0f}", f"{r['median_ms'] / s['median_ms']:.2f}",
                      f"{r['median_ms'] / e['median_ms']:.2f}"]
        r = any_rows[name]
        lines.append(f"| {question.get(name, 'reference')} | `{name}` | {r['params'] / 1e6:.2f}M | {r['gflops']:.2f} "
                     f"| " + " | ".join(cells) + " |")
    lines += ["", "Questions (ME-NeSt-Ghost, section 6): " + "; ".join(f"{k}: {v}" for k, v in FUTURE_QUESTIONS.items())
              + ". CoAtNet is built for 128x128 here (`img_size=128`). Wall time of the three runs: "
              + ", ".join(f"{k} {v['seconds'] / 60:.0f} min" for k, v in runs.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.render_only:
        data = measure(args.threads, args.repeats, args.warmup)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(OUT, json.dumps(data, indent=2, default=str))
    text = render(json.loads(OUT.read_text()))
    write_marked_block(DOC, "future-work", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
