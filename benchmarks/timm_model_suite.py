"""timm's own model tests (``tests/test_models.py`` of the installed timm release) run against ghostnest's models.

    .venv/bin/python benchmarks/timm_model_suite.py [--big] [--workdir DIR] [-- PYTEST_ARGS...]

timm checks its families with ``tests/test_models.py``: forward, backward, pretrained cfgs, torchscript, features
(``features_only``), ``forward_intermediates``, pruning, torch.fx. That file ships in timm's source distribution,
not in the wheel, so this script

1. downloads the sdist of the installed timm version with pip (``pip download timm==X --no-binary :all:
   --no-deps``) into ``--workdir`` (outside the repository; nothing of timm's is committed here) and unpacks its
   ``tests/``;
2. patches the test module's lists at run time, as timm does for its own families: our model modules (``menest``,
   ``ghostmixnet``, ``menest_tsa``, ``menest_resnet``: every module holding a ghostnest model, read from the
   registry) are added to ``FEAT_INTER_FILTERS`` (the families with ``forward_intermediates``); without ``--big``
   the M/L/XL models (:data:`BIG`) are added to ``EXCLUDE_FILTERS``, the filter timm itself uses to leave out its
   big models on small CI runners;
3. runs pytest with a small plugin that imports ghostnest (registering its models with timm) and limits every
   ``list_models`` parametrization to ghostnest's models (timm's own models and the tests hard-wired to them are
   deselected), and prints, per test function, how many ghostnest cases were collected, passed, failed and skipped.

Exit status 0 when nothing failed. docs/timm.md records the last result.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# left out of the default run as timm leaves out its big models on small CI runners (--big runs them): the M, L and
# XL sizes (49M-186M parameters) and the M sizes of the future-work variants (48M-49M)
BIG = ("*menest_ghost_m*", "*menest_ghost_l*", "*menest_ghost_xl*", "*menest_ghost_tsa_m*", "*menest_ghost_resnet_m*")

PLUGIN = '''"""Written by ghostnest's benchmarks/timm_model_suite.py: run timm's model tests on ghostnest's models only."""
import timm
import timm.models

import ghostnest

OURS = {info for info in ghostnest.list_models() if ghostnest.model_info(info).source == "ghostnest"}
_list_models = timm.list_models


def list_models(*args, **kwargs):
    return [n for n in _list_models(*args, **kwargs) if n.split(".")[0] in OURS]


timm.list_models = timm.models.list_models = list_models


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        name = getattr(item, "callspec", None) and item.callspec.params.get("model_name")
        (keep if name in OURS else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
'''


def timm_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import timm; print(timm.__version__)"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def fetch_tests(python: str, version: str, workdir: Path) -> Path:
    """``workdir/timm-VERSION/tests``, downloading and unpacking timm's sdist there if it is not yet."""
    tests = workdir / f"timm-{version}" / "tests"
    if (tests / "test_models.py").is_file():
        return tests
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "pip", "download", f"timm=={version}", "--no-binary", ":all:", "--no-deps",
                    "--quiet", "-d", str(workdir)], check=True)
    sdist = workdir / f"timm-{version}.tar.gz"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"timm-{version}/tests/") and m.isfile()]
        tar.extractall(workdir, members=members, filter="data")
    return tests


def ghostnest_modules(python: str) -> list[str]:
    """timm's module names (the ``module=`` of ``list_models``) of every ghostnest model."""
    code = ("import ghostnest, timm.models._registry as r; "
            "print(' '.join(sorted({r._model_to_module[n] for n in ghostnest.list_models() "
            "if ghostnest.model_info(n).source == 'ghostnest'})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, env=env)
    return out.stdout.split()


def patch(source: str, modules: list[str], big: bool) -> str:
    """timm's test module with ``modules`` among the families that have forward_intermediates and, unless ``big``,
    our M/L/XL models among the excluded big models (both of timm's EXCLUDE_FILTERS branches)."""
    ours = ", ".join(repr(m) for m in modules)
    source, n = re.subn(r"^FEAT_INTER_FILTERS = \[", f"FEAT_INTER_FILTERS = [{ours}, ", source, flags=re.M)
    if n != 1:
        raise SystemExit("timm's test_models.py has no FEAT_INTER_FILTERS list: this timm version is not supported")
    if not big:
        extra = ", ".join(repr(b) for b in BIG)
        source, n = re.subn(r"^(\s*)EXCLUDE_FILTERS = \[", rf"\1EXCLUDE_FILTERS = [{extra}, ", source, flags=re.M)
        if n < 1:
            raise SystemExit("timm's test_models.py has no EXCLUDE_FILTERS list: this timm version is not supported")
    return source


def summarise(junit: Path) -> tuple[dict, collections.Counter]:
    per_test: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total = collections.Counter()
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = case.get("name", "").split("[")[0]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        per_test[test][outcome] += 1
        per_test[test]["collected"] += 1
        total[outcome] += 1
        total["collected"] += 1
    return per_test, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", action="store_true", help="include ME-NeSt-Ghost M/L/XL (slow on a small CPU)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "ghostnest-timm-suite",
                   help="where timm's sdist is downloaded and the patched tests run (outside the repository)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -k features")
    args = p.parse_args(argv)
    python = sys.executable
    version = timm_version(python)
    tests = fetch_tests(python, version, args.workdir)
    modules = ghostnest_modules(python)
    run = args.workdir / f"run-{version}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "conftest.py").write_text((tests / "conftest.py").read_text())
    (run / "ghostnest_timm_plugin.py").write_text(PLUGIN)
    (run / "test_models.py").write_text(patch((tests / "test_models.py").read_text(), modules, args.big))
    junit = run / "junit.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(run), os.environ.get("PYTHONPATH", "")])}
    cmd = [python, "-m", "pytest", str(run / "test_models.py"), "-p", "ghostnest_timm_plugin", "-q", "-rfE",
           "-o", "addopts=", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning", f"--rootdir={run}", f"--junitxml={junit}", *args.pytest_args]
    print(f"timm {version}; ghostnest modules added to FEAT_INTER_FILTERS: {modules}; "
          f"{'all sizes' if args.big else 'M/L/XL excluded as big models'}", flush=True)
    rc = subprocess.run(cmd, cwd=run, env=env).returncode
    if not junit.is_file():
        return rc or 1
    per_test, total = summarise(junit)
    print(f"\n{'test':<48} {'collected':>9} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for test, c in sorted(per_test.items()):
        print(f"{test:<48} {c['collected']:>9} {c['passed']:>7} {c['failed']:>7} {c['skipped']:>8}")
    print(f"{'total':<48} {total['collected']:>9} {total['passed']:>7} {total['failed']:>7} {total['skipped']:>8}")
    return 0 if total["failed"] == 0 and rc in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
