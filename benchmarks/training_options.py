"""The training options beyond the papers, measured on the quickstart (docs/training.md, "Training options").

    python benchmarks/training_options.py --out runs/options            # all runs, then the table
    python benchmarks/training_options.py --out runs/options --table    # the table of runs already there

Runs ``ghostnest train --recipe quickstart`` (the embedded digits, CPU) interleaved, so that a change of the machine's
load falls on both sides of each comparison:

- **weight EMA**: seeds 0, 1, 2, each without and with ``--set ema_decay=0.9998`` (timm's ModelEmaV3 with its
  decay warm-up); test top-1 of the best checkpoint, mean and spread (min-max) over the seeds;
- **gradient accumulation**: the global batch 128 as 4 micro-batches of 32 (``accum_steps=4``) against one batch of
  128, seed 0: test top-1, the per-epoch training loss and the wall time.

Each run directory is kept (``--out``); an existing finished run is read, not trained again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SEEDS = (0, 1, 2)
EMA = ["ema_decay=0.9998"]
# name -> --set overrides of the quickstart recipe, in the order run (interleaved)
RUNS = {
    **{f"{side}-seed{seed}": [f"seed={seed}", *(EMA if side == "ema" else [])]
       for seed in SEEDS for side in ("plain", "ema")},
    "batch128": ["batch_size=128"],
    "accum4x32": ["batch_size=128", "accum_steps=4"],
}


def train(out: Path, name: str, sets: list[str]) -> None:
    from ghostnest.cli import main

    run = out / name
    if (run / "results.json").is_file():
        return
    args = ["train", "--recipe", "quickstart", "--out", str(run), "--device", "cpu", "--quiet"]
    for item in sets:
        args += ["--set", item]
    t0 = time.time()
    if main(args) != 0:
        raise SystemExit(f"{name}: training failed")
    (run / "wall_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    print(f"{name}: done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


def result(out: Path, name: str) -> dict:
    from ghostnest.train.metrics import read_metrics

    run = out / name
    res = json.loads((run / "results.json").read_text())
    wall = run / "wall_seconds.txt"
    return {**res, "rows": read_metrics(run / "metrics.csv"),
            "wall_seconds": float(wall.read_text()) if wall.is_file() else None}


def table(out: Path) -> str:
    lines = ["| runs | test top-1, seeds 0 / 1 / 2 | mean | spread (max - min) |", "| --- | --- | ---: | ---: |"]
    for side, label in (("plain", "quickstart"), ("ema", "quickstart + `ema_decay=0.9998`")):
        tops = [result(out, f"{side}-seed{s}")["test_top1"] for s in SEEDS]
        best = [result(out, f"{side}-seed{s}").get("best_weights", "live") for s in SEEDS]
        note = f" (best checkpoint: {', '.join(best)})" if side == "ema" else ""
        lines.append(f"| {label}{note} | {' / '.join(f'{t:.2f}%' for t in tops)} | {statistics.mean(tops):.2f}% | "
                     f"{max(tops) - min(tops):.2f} |")
    lines += ["", "| global batch 128 | test top-1 | train loss epoch 1 / 2 | val top-1 epoch 1 / 2 | wall time |",
              "| --- | ---: | --- | --- | ---: |"]
    for name, label in (("batch128", "one batch of 128"), ("accum4x32", "4 micro-batches of 32 (`accum_steps=4`)")):
        r = result(out, name)
        losses = " / ".join(f"{row['train_loss']:.4f}" for row in r["rows"])
        vals = " / ".join(f"{row['val_top1']:.2f}%" for row in r["rows"])
        wall = f"{r['wall_seconds']:.0f} s" if r["wall_seconds"] else "-"
        lines.append(f"| {label} | {r['test_top1']:.2f}% | {losses} | {vals} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/options"), help="folder of the run directories")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args(argv)
    if not args.table:
        for name, sets in RUNS.items():
            train(args.out, name, sets)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
