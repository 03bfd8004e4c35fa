"""The fine-tuning recipe's worked example (docs/training.md, "Fine-tuning from a run"): train on digits 0-4,
fine-tune on 5-9.

    python benchmarks/finetune_digits.py --out runs/finetune-digits

1. writes the embedded digits (32 x 32, the quickstart's data) as two ImageFolder trees, ``digits0-4`` and
   ``digits5-9`` (``train/`` and ``test/`` as in the ``digits`` data set's own split), the way one brings any data;
2. ``ghostnest train --recipe quickstart`` on digits 0-4 (the trained run);
3. ``ghostnest train --recipe finetune --set init_from=<that run>`` on digits 5-9 (a new 5-way head, warmup, layer
   decay, EMA, clipping);
4. for comparison, the quickstart recipe from scratch on digits 5-9 for as many epochs as the fine-tune.

Prints the commands and a table (test top-1, wall time). An existing finished run in ``--out`` is read again, not
trained again.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def write_image_folders(root: Path) -> dict[str, Path]:
    """digits 0-4 and 5-9 as ImageFolder trees of PNG files under ``root``; returns their paths."""
    from PIL import Image

    from ghostnest.data import load_dataset

    data = load_dataset("digits")
    out = {}
    for name, keep in (("digits0-4", range(0, 5)), ("digits5-9", range(5, 10))):
        tree = root / name
        out[name] = tree
        if (tree / "done").is_file():
            continue
        for split_name, split in (("train", data.train), ("test", data.test)):
            for i, (image, label) in enumerate(zip(split.images, split.labels.tolist(), strict=True)):
                if label in keep:
                    folder = tree / split_name / data.classes[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
        (tree / "done").write_text("")
    return out


def train(run: Path, args: list[str]) -> float | None:
    from ghostnest.cli import main

    if (run / "results.json").is_file():
        return None
    command = ["train", *args, "--out", str(run), "--device", "cpu", "--quiet"]
    print("ghostnest " + " ".join(command), file=sys.stderr, flush=True)
    t0 = time.time()
    if main(command) != 0:
        raise SystemExit(f"{run}: training failed")
    seconds = time.time() - t0
    (run / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-digits"), help="data and run directories")
    args = parser.parse_args(argv)
    trees = write_image_folders(args.out / "data")
    first, second = (f"dataset=imagefolder:{trees[n]}:32" for n in ("digits0-4", "digits5-9"))
    base = args.out / "base-0-4"
    train(base, ["--recipe", "quickstart", "--set", first])
    train(args.out / "finetune-5-9", ["--recipe", "finetune", "--set", f"init_from={base}", "--set", second])
    epochs = json.loads((args.out / "finetune-5-9" / "results.json").read_text())["epochs"]
    train(args.out / "scratch-5-9", ["--recipe", "quickstart", "--set", second, "--set", f"epochs={epochs}"])
    print("| run | data | test top-1 | best epoch | best weights | wall time |")
    print("| --- | --- | ---: | ---: | --- | ---: |")
    for name, what in (("base-0-4", "quickstart recipe, digits 0-4"),
                       ("finetune-5-9", "finetune recipe from base-0-4, digits 5-9"),
                       ("scratch-5-9", f"quickstart recipe from scratch, {epochs} epochs, digits 5-9")):
        res = json.loads((args.out / name / "results.json").read_text())
        wall = args.out / name / "wall_seconds.txt"
        seconds = f"{float(wall.read_text()):.0f} s" if wall.is_file() else "-"
        print(f"| {name} | {what} | {res['test_top1']:.2f}% | {res['best_epoch']}/{res['epochs']} | "
              f"{res.get('best_weights', 'live')} | {seconds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
