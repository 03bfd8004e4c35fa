"""Speed: before/after measurements of every fast path, against the project's speed targets (``CELLS``).

Each *cell* builds several variants (a model in one configuration: plain or fast, NCHW or channels_last) in ONE
process and times them with ``ghostnest.bench.bench_variants``, the loop behind ``ghostnest bench``: two warm-up
steps each, then **interleaved** rounds (round robin, the starting variant rotating each round), reporting medians,
quartiles and minima. All variants of a cell get the same random batch; a ``+cl`` variant gets it in
channels_last. Ratios within a cell are the robust figures on a shared machine. Results go to
``benchmarks/results/speed/<device>.json``; ``--render`` writes ``benchmarks/sections/speed.md``, which
``benchmarks/run_benchmarks.py`` includes in docs/benchmarks.md.

Variants:

- ``effnet`` / ``effnet+fuse``: timm's ``efficientnetv2_s``/``_m``, unfused / through ``ghostnest.fuse`` (its
  conv + BatchNormAct2d pairs folded), so both sides get the same treatment.
- ``plain``: ME-NeSt-Ghost as first written: every MixConv as one convolution per kernel group + ``torch.cat``
  (``impl="split"``), PyTorch's Mish kernel.
- ``fast`` (training): MixConv ``impl="auto"`` (one zero-padded convolution for multiplier 1, repeated input +
  per-group plain depthwise convolutions for multiplier > 1) and the compiled Mish (``use_fast_mish``).
- ``fuse`` (inference): ``ghostnest.fuse(model)``: the above plus every BN folded, MixConvs merged.
- ``+cl``: model and input in channels_last.
- GhostMixNet training: ``benchmarks/plain_ghostmixnet.py`` (the plain eager baseline) against ours.

Usage: ``python benchmarks/speed.py [--cells infer-s-128 ...] [--threads 1] [--rounds N]``, then
``python benchmarks/speed.py --render`` and ``python benchmarks/run_benchmarks.py --render-only``.
On a GPU machine ``--device cuda`` runs the same cells (writing ``cuda-fp32.json``).

The targets: (1) ME-NeSt-Ghost-S inference at 128x128 within 1.5x EfficientNet-V2-S; (2) the same for the M
sizes at 128 and for S at 256; (3) an ME-NeSt-Ghost-S training step within 2x EfficientNet-V2-S; (4) GhostMixNet
training at least 1.3x the images/s of the plain eager network. Each row also stores the variant's peak memory
(``peak_mem_mb``, ``mem_kind``: see ``ghostnest.bench.memory``).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ghostnest  # noqa: E402
from ghostnest.bench import bench_variants, environment  # noqa: E402
from ghostnest.layers.fused import use_fast_mish  # noqa: E402
from ghostnest.layers import set_mixconv_impl  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "speed"
SECTION = ROOT / "benchmarks" / "sections" / "speed.md"

# cell id -> (mode, input, batch, [variants], rounds, target text)
CELLS = {
    "infer-s-128": ("infer", 128, 8, ["efficientnetv2_s", "efficientnetv2_s+fuse", "efficientnetv2_s+fuse+cl",
                                      "menest_ghost_s+plain", "menest_ghost_s+fuse", "menest_ghost_s+fuse+cl"], 12,
                    "target 1: S inference at 128, batch 8: at most 1.5x EfficientNet-V2-S"),
    "infer-m-128": ("infer", 128, 8, ["efficientnetv2_m", "efficientnetv2_m+fuse", "efficientnetv2_m+fuse+cl",
                                      "menest_ghost_m+plain", "menest_ghost_m+fuse", "menest_ghost_m+fuse+cl"], 8,
                    "target 2: M inference at 128, batch 8: at most 1.5x EfficientNet-V2-M"),
    "infer-s-256": ("infer", 256, 8, ["efficientnetv2_s", "efficientnetv2_s+fuse", "efficientnetv2_s+fuse+cl",
                                      "menest_ghost_s+plain", "menest_ghost_s+fuse", "menest_ghost_s+fuse+cl"], 6,
                    "target 2: S inference at 256, batch 8: at most 1.5x EfficientNet-V2-S"),
    "train-s-128": ("train", 128, 16, ["efficientnetv2_s", "efficientnetv2_s+cl", "menest_ghost_s+plain",
                                       "menest_ghost_s+fast", "menest_ghost_s+fast+cl"], 5,
                    "target 3: S training step at 128, batch 16: at most 2x EfficientNet-V2-S"),
    "train-gmn-32": ("train", 32, 128, ["plain_ghostmixnet", "plain_ghostmixnet+cl", "ghostmixnet",
                                        "ghostmixnet+cl"], 5,
                     "target 4: GhostMixNet training at 32, batch 128: at least 1.3x the plain eager network's "
                     "images/s"),
}


def build(variant: str, mode: str, num_classes: int, device: torch.device) -> torch.nn.Module:
    name, *flags = variant.split("+")
    torch.manual_seed(0)
    if name == "plain_ghostmixnet":
        from plain_ghostmixnet import PlainGhostMixNet

        model = PlainGhostMixNet(num_classes)
    else:
        model = ghostnest.create_model(name, num_classes=num_classes)
    set_mixconv_impl(model, "split" if "plain" in flags else "auto")
    model = model.to(device)
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
    model.train(mode == "train")
    if "fast" in flags:
        use_fast_mish(model)
    if "fuse" in flags:
        model = ghostnest.fuse(model)
    return model


def run_cell(cell_id: str, device: str, rounds: int | None, say) -> dict:
    """Build a cell's variants and time them with :func:`ghostnest.bench.bench_variants` (2 warm-up steps each)."""
    mode, size, batch, variants, default_rounds, target = CELLS[cell_id]
    rounds = rounds or default_rounds
    dev = torch.device(device)
    num_classes = 10 if "gmn" in cell_id else 100
    models = []
    for variant in variants:
        say(f"{cell_id}: building {variant}")
        models.append((variant, build(variant, mode, num_classes, dev)))
    rows = bench_variants(models, size, batch, num_classes, mode=mode, device=device,
                          channels_last=["cl" in v.split("+")[1:] for v in variants], repeats=rounds, warmup=2,
                          progress=lambda msg: say(f"{cell_id}: {msg}"))
    del models
    gc.collect()
    keys = ("median_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "first_call_ms", "images_per_s", "peak_mem_mb",
            "mem_kind", "times_ms")
    return dict(id=cell_id, mode=mode, input=size, batch=batch, rounds=rounds, target=target,
                rows=[dict(variant=r["name"], **{k: r[k] for k in keys}) for r in rows],
                threads=torch.get_num_threads(), device=device)


# ------------------------------------------------------------------------------------------------------ render
def _mem(row: dict) -> str:
    """A row's peak memory in MiB, or "-" where it was not stored (results measured before it was)."""
    return f"{row['peak_mem_mb']:,.0f}" if row.get("peak_mem_mb") is not None else "-"


def _row(cell: dict, variant: str) -> dict | None:
    return next((r for r in cell["rows"] if r["variant"] == variant), None)


def _ratio(cell, a, b, key="median_ms") -> float | None:
    ra, rb = _row(cell, a), _row(cell, b)
    return ra[key] / rb[key] if ra and rb else None


def verdicts(cell: dict) -> list[str]:
    """Plain-language lines: what the target asks, what was measured, met or not."""
    cid = cell["id"]
    out = []
    if cid.startswith("infer"):
        eff = cell["rows"][0]["variant"]
        ours = cell["rows"][3]["variant"].split("+")[0]
        before = _ratio(cell, f"{ours}+plain", eff)
        for fmt in ("", "+cl"):
            after = _ratio(cell, f"{ours}+fuse{fmt}", f"{eff}+fuse{fmt}")
            after_min = _ratio(cell, f"{ours}+fuse{fmt}", f"{eff}+fuse{fmt}", "min_ms")
            label = "channels_last" if fmt else "NCHW"
            out.append(f"{label}: fused {ours} / fused {eff} = **{after:.2f}x** (minima {after_min:.2f}x) -> "
                       f"{'met' if after <= 1.5 else 'NOT met'} (target <= 1.5x)")
        best_ours = min((r for r in cell["rows"] if r["variant"].startswith(ours + "+fuse")), key=lambda r: r["median_ms"])
        best_eff = min((r for r in cell["rows"] if r["variant"].startswith(eff)), key=lambda r: r["median_ms"])
        out.append(f"fastest against fastest: `{best_ours['variant']}` / `{best_eff['variant']}` = "
                   f"**{best_ours['median_ms'] / best_eff['median_ms']:.2f}x**")
        out.append(f"before (plain {ours} / unfused {eff}, NCHW): {before:.2f}x; fusion alone speeds {ours} up "
                   f"{_ratio(cell, f'{ours}+plain', f'{ours}+fuse'):.2f}x and {eff} "
                   f"{_ratio(cell, eff, f'{eff}+fuse'):.2f}x")
    elif cid == "train-s-128":
        for fmt in ("", "+cl"):
            r = _ratio(cell, f"menest_ghost_s+fast{fmt}", f"efficientnetv2_s{fmt}")
            rm = _ratio(cell, f"menest_ghost_s+fast{fmt}", f"efficientnetv2_s{fmt}", "min_ms")
            out.append(f"{'channels_last' if fmt else 'NCHW'}: fast menest_ghost_s / efficientnetv2_s = **{r:.2f}x** "
                       f"(minima {rm:.2f}x) -> {'met' if r <= 2 else 'NOT met'} (target <= 2x)")
        best = min((r for r in cell["rows"] if r["variant"].startswith("menest_ghost_s+fast")), key=lambda r: r["median_ms"])
        best_eff = min((r for r in cell["rows"] if r["variant"].startswith("efficientnetv2_s")), key=lambda r: r["median_ms"])
        out.append(f"fastest against fastest: `{best['variant']}` / `{best_eff['variant']}` = "
                   f"**{best['median_ms'] / best_eff['median_ms']:.2f}x**")
        out.append(f"before (plain, NCHW): {_ratio(cell, 'menest_ghost_s+plain', 'efficientnetv2_s'):.2f}x; "
                   f"fast path alone: {_ratio(cell, 'menest_ghost_s+plain', 'menest_ghost_s+fast'):.2f}x faster")
    elif cid == "train-gmn-32":
        for fmt in ("", "+cl"):
            r = _ratio(cell, "plain_ghostmixnet", f"ghostmixnet{fmt}")  # images/s ratio = inverse time ratio
            rm = _ratio(cell, "plain_ghostmixnet", f"ghostmixnet{fmt}", "min_ms")
            out.append(f"ghostmixnet{' channels_last' if fmt else ''} images/s / plain eager (NCHW) images/s = "
                       f"**{r:.2f}x** (minima {rm:.2f}x) -> {'met' if r >= 1.3 else 'NOT met'} (target >= 1.3x)")
        out.append(f"plain eager with channels_last: "
                   f"{_ratio(cell, 'plain_ghostmixnet', 'plain_ghostmixnet+cl'):.2f}x the plain NCHW images/s")
    return out


def render(results_dir: Path = RESULTS, section: Path = SECTION) -> Path:
    L = ["## Speed", ""]
    L.append("Generated by `benchmarks/speed.py --render` from `benchmarks/results/speed/*.json` (measure with "
             "`python benchmarks/speed.py`). Every cell below ran in **one process**, its variants timed "
             "**interleaved**; the ratios are medians of the interleaved rounds (minima in brackets). The variants "
             "are described in `benchmarks/speed.py`'s docstring: *plain* = MixConv as one convolution per kernel "
             "group + concatenation and PyTorch's Mish; *fast* = MixConv `impl=\"auto\"` + compiled Mish (training);"
             " *fuse* = `ghostnest.fuse(model)` (BN folded, MixConv merged, compiled Mish; for timm's EfficientNet-V2 "
             "its conv + BatchNormAct2d pairs folded by the same function); *cl* = channels_last. Inference runs "
             "under `torch.inference_mode()`, both models with the same flags.")
    L.append("")
    for path in sorted(results_dir.glob("*.json")):
        rec = json.loads(path.read_text())
        env = rec["env"]
        L.append(f"### {rec['device'].upper()}, fp32: last cell measured {env['date_utc']}")
        L.append("")
        L.append(f"{env['cpu']}, {env['usable_cores']} usable cores, **{rec['threads']} torch thread(s)**; torch "
                 f"{env['torch']}, timm {env['timm']}. Absolute times drift between runs on this VM (its host is shared with other "
                 "VMs, and earlier cells ran while other jobs used the cores): read the ratios within a cell.")
        L.append("")
        for cell in rec["cells"]:
            L.append(f"#### `{cell['id']}`: {cell['mode']}, {cell['input']}x{cell['input']}, batch {cell['batch']}, "
                     f"{cell['rounds']} interleaved rounds")
            L.append("")
            L.append(f"*{cell['target']}*")
            L.append("")
            L.append("| variant | median ms | IQR ms | min-max ms | images/s | first call s | peak MiB |")
            L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in cell["rows"]:
                L.append(f"| `{r['variant']}` | {r['median_ms']:,.0f} | {r['p25_ms']:,.0f}-{r['p75_ms']:,.0f} | "
                         f"{r['min_ms']:,.0f}-{r['max_ms']:,.0f} | {r['images_per_s']:.1f} | "
                         f"{r['first_call_ms'] / 1e3:.1f} | {_mem(r)} |")
            L.append("")
            L += [f"- {v}" for v in verdicts(cell)]
            L.append("")
        for note in rec.get("notes", []):
            L.append(f"- {note}")
        L.append("")
    notes = ROOT / "benchmarks" / "speed_notes.md"
    if notes.exists():
        L.append(notes.read_text().strip())
        L.append("")
    section.parent.mkdir(parents=True, exist_ok=True)
    section.write_text("\n".join(L).rstrip() + "\n")
    return section


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: robust on a shared machine)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell (default: per cell)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--render", action="store_true", help="only rewrite benchmarks/sections/speed.md")
    args = p.parse_args(argv)
    if args.render:
        print(render())
        return 0
    torch.set_num_threads(args.threads)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.device}-fp32.json"
    rec = json.loads(out.read_text()) if out.exists() else {"cells": []}
    rec.update(device=args.device, threads=args.threads, env=environment(args.device))
    for cid in args.cells:
        t0 = time.time()
        cell = run_cell(cid, args.device, args.rounds, say)
        cell["wall_s"] = time.time() - t0
        rec["cells"] = [c for c in rec["cells"] if c["id"] != cid] + [cell]
        rec["cells"].sort(key=lambda c: list(CELLS).index(c["id"]))
        out.write_text(json.dumps(rec, indent=1))
        for line in verdicts(cell):
            say(f"  {line}")
    print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
