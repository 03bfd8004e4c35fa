"""The ``ghostnest`` command line: one subcommand per task, each a small function over the library.

Every subcommand is registered in ``COMMANDS`` below by an ``add_<name>_parser`` function. A mistake by the user
(bad name, bad file, bad value) raises ``ValueError``/``OSError`` inside the library; ``main`` turns it into a
one-line ``error: ...`` message and exit status 2, never a bare traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


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
    p.add_argument("--num-classes", type=int, default=None, help="class count (default: the paper's)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, params, gflops, input_size}")
    p.set_defaults(func=_cmd_models)


COMMANDS = [add_models_parser]


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
