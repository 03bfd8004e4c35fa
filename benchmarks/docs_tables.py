"""The model figures of README.md and docs/architecture.md, generated from ``ghostnest models`` (one source).

Rewrites two marked blocks (``ghostnest.fileio.write_marked_block``) with what ``ghostnest models`` prints (its
``model_rows``: parameters and GFLOPs counted on the meta device, or read from its cache):

- README.md, block ``models``: every registered model, one row each;
- docs/architecture.md, block ``menest-counts``: ME-NeSt-Ghost S/M/L/XL beside timm's EfficientNet-V2 of the same
  size.

Run it after adding or changing a model: ``python benchmarks/docs_tables.py`` (``--check`` only says whether the
files are current, exit status 1 if not). tests/test_docs_tables.py fails while they are not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SIZES = ("s", "m", "l", "xl")


def gap(params: int, paper_m: float) -> str:
    """``-7.4%``: our count against the paper's (``+0.0%``, not ``-0.0%``, under 0.05%)."""
    return f"{round(100 * (params / (paper_m * 1e6) - 1), 1) + 0.0:+.1f}%"


def paper_cell(row: dict) -> str:
    """``21M (-7.4%)``: the paper's count and our gap to it; ``-`` where the paper gives none."""
    paper = row["paper_params_m"]
    return f"{paper:g}M ({gap(row['params'], paper)})" if paper else "-"


def readme_row(row: dict) -> str:
    return (f"| `{row['name']}` | {row['family']} | {row['num_classes']} | {row['params']:,} | {paper_cell(row)} | "
            f"{row['gflops']:.3f} | {row['input_size']} |")


def readme_table(rows: list[dict]) -> str:
    head = ["| model | family | classes | parameters | paper (gap) | GFLOPs / image | input |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    return "\n".join(head + [readme_row(r) for r in rows])


def counts_table(rows: list[dict]) -> str:
    """ME-NeSt-Ghost against EfficientNet-V2, size by size (the sizes both have)."""
    by_name = {r["name"]: r for r in rows}
    lines = ["| model | ours | paper | gap | timm EfficientNet-V2 | ours / EffNet-V2 | GFLOPs at 128 (ours / EffNet-V2) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in SIZES:
        ours, eff = by_name.get(f"menest_ghost_{size}"), by_name.get(f"efficientnetv2_{size}")
        if ours is None or eff is None:
            continue
        paper = ours["paper_params_m"]
        lines.append(f"| {size.upper()} | {ours['params']:,} ({ours['params'] / 1e6:.2f}M) | {paper:g}M | "
                     f"{gap(ours['params'], paper)} | {eff['params'] / 1e6:.2f}M | "
                     f"{ours['params'] / eff['params']:.2f} | {ours['gflops']:.3f} / {eff['gflops']:.3f} |")
    return "\n".join(lines)


def blocks(rows: list[dict]) -> dict[tuple[Path, str], str]:
    return {(README, "models"): readme_table(rows), (ARCHITECTURE, "menest-counts"): counts_table(rows)}


def current_block(path: Path, name: str) -> str | None:
    """The text between block ``name``'s markers in ``path``, or ``None``."""
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->\n", f"\n<!-- {name}:end -->"
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the blocks are current (exit 1 if not)")
    args = ap.parse_args()
    from ghostnest.cli import model_rows
    from ghostnest.fileio import write_marked_block

    stale = []
    for (path, name), text in blocks(model_rows()).items():
        if current_block(path, name) != text:
            stale.append(f"{path.relative_to(ROOT)} ({name})")
            if not args.check:
                write_marked_block(path, name, text)
    verb = "out of date" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "all model tables are current")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
