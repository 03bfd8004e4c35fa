"""Start-up: how long the ``ghostnest`` command takes, as a whole process from a fresh shell.

Times ``ghostnest --version``, ``ghostnest --help``, every ``ghostnest COMMAND --help``, ``ghostnest models`` (with
a warm and a cold figures cache) and, given ``--run RUN_DIR``, ``ghostnest eval RUN_DIR``: each ``--repeats`` times
after one untimed run, reporting the median and the min-max of the wall time. The command is run the way the
console script runs it (``python -m ghostnest_launcher``, the module behind the ``ghostnest`` script), or as
``--command 'python -m ghostnest'`` or any other prefix, to compare.

Targets (docs/architecture.md, "Start-up"): ``--version`` and every ``--help`` under 0.5 s, ``models`` under 3 s,
``eval`` of the quickstart run under 10 s. A benchmark, not a test: on a shared machine the figures move with its
load, so the script prints the 1-minute load average beside them.

Usage: ``python benchmarks/startup.py [--run runs/quickstart-...] [--repeats 5] [--command 'python -m ghostnest']``
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ghostnest_launcher import load_cli  # noqa: E402  (the command list, without importing the package)

COMMANDS = [add.__name__[len("add_"):-len("_parser")] for add in load_cli().COMMANDS]


def timed(argv: list[str], repeats: int, env: dict, fresh_cache: bool = False) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``argv`` after one untimed run (a new cache folder per run if asked)."""
    times = []
    for i in range(repeats + 1):
        run_env = dict(env)
        with tempfile.TemporaryDirectory() as cache:
            if fresh_cache:
                run_env["GHOSTNEST_CACHE"] = cache
            t0 = time.perf_counter()
            out = subprocess.run(argv, env=run_env, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed ({out.returncode}): {out.stderr.strip()[-300:]}")
        if i:
            times.append(elapsed)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--command", default=f"{sys.executable} -m ghostnest_launcher",
                    help="how to start ghostnest (default: the console script's module with this Python)")
    ap.add_argument("--run", default=None, help="a run directory to time `eval` on (the quickstart's)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = shlex.split(args.command)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as out:
        cases = [("--version", ["--version"], False), ("--help", ["--help"], False)]
        cases += [(f"{c} --help", [c, "--help"], False) for c in COMMANDS]
        cases += [("models (cache warm)", ["models"], False), ("models (cache cold)", ["models"], True)]
        if args.run:
            cases.append(("eval RUN", ["eval", args.run, "--out", out], False))
        print(f"{'command':<24} {'median s':>9} {'min-max s':>14}   ({args.repeats} runs after 1, "
              f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
        for name, extra, cold in cases:
            t = timed(base + extra, args.repeats, env, fresh_cache=cold)
            print(f"{name:<24} {statistics.median(t):>9.2f} {min(t):>6.2f}-{max(t):<7.2f}", flush=True)


if __name__ == "__main__":
    main()
