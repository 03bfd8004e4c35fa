"""Encoders for segmentation and detection: parameters and CPU latency of ghostnest's ``features_only`` backbones
against timm's ``efficientnetv2_s`` and ``resnet50``, timed interleaved in one process (ghostnest.bench).

    .venv/bin/python benchmarks/backbones.py [--input 128] [--batch 1] [--repeats 10] [--json]

Each encoder is ``timm.create_model(name, features_only=True)`` (every feature level, as smp's ``tu-`` encoders
build them) in eval mode under inference_mode, plain PyTorch fp32 (not fused: smp and torchvision run the encoder
as it is). Prints a markdown table for docs/timm.md, "Backbones".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import timm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ghostnest  # noqa: E402,F401  (registers the ghostnest models with timm)
from ghostnest.bench import bench_variants, environment  # noqa: E402

ENCODERS = ("menest_ghost_s", "ghostmixnet", "efficientnetv2_s", "resnet50")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, as docs/benchmarks.md's CPU tables: steadier on shared cores)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    variants = [(n, timm.create_model(n, features_only=True)) for n in ENCODERS]
    info = {n: (m.feature_info.channels(), m.feature_info.reduction()) for n, m in variants}
    rows = bench_variants(variants, input_size=args.input, batch=args.batch, num_classes=1, mode="infer",
                          device="cpu", repeats=args.repeats, warmup=args.warmup, threads=args.threads)
    env = environment("cpu")
    if args.json:
        print(json.dumps({"env": env, "rows": rows, "levels": info}, indent=2, default=str))
        return 0
    first = rows[0]["median_ms"]
    print(f"| encoder (`features_only=True`) | parameters | levels: channels (reduction) | CPU ms / batch of "
          f"{args.batch} at {args.input}x{args.input} | vs {rows[0]['name']} |")
    print("| --- | ---: | --- | ---: | ---: |")
    for r in rows:
        chs, red = info[r["name"]]
        levels = ", ".join(f"{c} ({s})" for c, s in zip(chs, red, strict=True))
        print(f"| `{r['name']}` | {r['params'] / 1e6:.2f}M | {levels} | {r['median_ms']:.1f} | "
              f"{r['median_ms'] / first:.2f}x |")
    print(f"\n{env['cpu']}, {env['usable_cores']} cores, {args.threads} thread(s); torch {env['torch']}; "
          f"{env['date_utc']}; median of {args.repeats} interleaved rounds after {args.warmup} warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
