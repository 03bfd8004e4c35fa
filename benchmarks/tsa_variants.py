"""Where self-attention goes in ME-NeSt-Ghost-TSA, and in which form: the measurements behind the choice.

The ME-NeSt-Ghost paper (section 6) proposes replacing the Split-Attention units of its MS blocks with transformer
self-attention. Those blocks hold the high-resolution stages (64 x 64 to 16 x 16 pixels at 128 x 128 input, twice
that at the recipe's 256), where self-attention is costly. Each variant below is ME-NeSt-Ghost-S with one choice
changed (``menest_ghost_tsa_s`` options); all are timed in ONE process with ``ghostnest.bench.bench_variants``
(interleaved rounds, medians): inference fused (``ghostnest.fuse``), and a training step (forward, backward,
AdamW). Parameters and GFLOPs (per image, multiply-add = 2) are counted on the ``meta`` device, at 128 and 256.

    python benchmarks/tsa_variants.py --threads 1            # prints the markdown table, writes the JSON

Results: ``benchmarks/results/future-work/tsa-variants.json``; docs/architecture.md quotes the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ghostnest  # noqa: E402
from ghostnest.bench import bench_variants, environment  # noqa: E402
from ghostnest.fileio import atomic_write_text  # noqa: E402
from ghostnest.stats import count_flops, count_params  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "future-work" / "tsa-variants.json"

# label -> (model, options): the reference, then one choice at a time
VARIANTS = {
    "Split-Attention (ME-NeSt-Ghost-S)": ("menest_ghost_s", {}),
    "in place, 8x8 windows + rel. bias": ("menest_ghost_tsa_s", {"attn_at": "expanded"}),
    "in place, 8x8 windows, no bias": ("menest_ghost_tsa_s", {"attn_at": "expanded", "rel_pos": False}),
    "in place, global in the last MS stage": ("menest_ghost_tsa_s", {"attn_at": "expanded", "global_stages": (2,)}),
    "in place, global everywhere": ("menest_ghost_tsa_s", {"attn_at": "expanded", "window": 0}),
    "after projection, 8x8 windows + rel. bias (chosen)": ("menest_ghost_tsa_s", {}),
    "after projection, 8x8 windows, no bias": ("menest_ghost_tsa_s", {"rel_pos": False}),
    "after projection, global in the last MS stage": ("menest_ghost_tsa_s", {"global_stages": (2,)}),
    "after projection, global everywhere": ("menest_ghost_tsa_s", {"window": 0}),
    "last MS stage only (Split-Attention before)": ("menest_ghost_tsa_s", {"attn_stages": (2,)}),
}


def counts(name: str, kw: dict) -> dict:
    with torch.device("meta"):
        model = ghostnest.create_model(name, num_classes=100, **kw)
    return {"params": count_params(model), "gflops_128": count_flops(model, 128) / 1e9,
            "gflops_256": count_flops(model, 256) / 1e9}


def measure(mode: str, size: int, batch: int, threads: int, repeats: int, skip: set[str]) -> dict:
    variants = []
    for label, (name, kw) in VARIANTS.items():
        if label in skip:
            continue
        torch.manual_seed(0)
        model = ghostnest.create_model(name, num_classes=100, **kw)
        variants.append((label, ghostnest.fuse(model) if mode == "infer" else model))
    rows = bench_variants(variants, input_size=size, batch=batch, num_classes=100, mode=mode, device="cpu",
                          repeats=repeats, warmup=1, threads=threads, progress=lambda m: print(m, file=sys.stderr))
    return {r["name"]: {k: r[k] for k in ("median_ms", "p25_ms", "p75_ms", "min_ms", "peak_mem_mb")} for r in rows}


def _ms(row: dict | None) -> str:
    return "not timed" if row is None else f"{row['median_ms']:,.0f}"


def _ratio(row: dict | None, ref: dict | None) -> str:
    return "" if row is None or ref is None else f"{row['median_ms'] / ref['median_ms']:.2f}"


def render(data: dict) -> str:
    ref = "Split-Attention (ME-NeSt-Ghost-S)"
    inf, tr = data["infer"], data["train"]
    lines = ["| variant | params | vs S | GFLOPs 128 | GFLOPs 256 | infer ms (b8, fused) | x S | train step ms (b8) "
             "| x S |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    p0 = data["counts"][ref]["params"]
    for label in VARIANTS:
        c = data["counts"][label]
        i, t = inf.get(label), tr.get(label)
        lines.append(f"| {label} | {c['params'] / 1e6:.2f}M | {c['params'] / p0 - 1:+.1%} | {c['gflops_128']:.2f} "
                     f"| {c['gflops_256']:.2f} | {_ms(i)} | {_ratio(i, inf.get(ref))} | {_ms(t)} "
                     f"| {_ratio(t, tr.get(ref))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--render-only", action="store_true", help="print the table from the JSON file")
    args = ap.parse_args(argv)
    if args.render_only:
        print(render(json.loads(OUT.read_text())))
        return 0
    start = time.time()
    data = {"env": environment("cpu"), "threads": args.threads, "input_size": args.size, "batch": args.batch,
            "repeats": args.repeats, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    data["counts"] = {label: counts(name, kw) for label, (name, kw) in VARIANTS.items()}
    # global attention everywhere trains at many times the step of the others; its FLOPs say enough
    too_slow = {"in place, global everywhere", "after projection, global everywhere"}
    data["infer"] = measure("infer", args.size, args.batch, args.threads, args.repeats, set())
    data["train"] = measure("train", args.size, args.batch, args.threads, args.repeats, too_slow)
    data["seconds"] = time.time() - start
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(data, indent=2, default=str))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
