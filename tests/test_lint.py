"""The code passes ruff with the project's rules (pyproject.toml, [tool.ruff]): no unused or undefined names, no
likely bugs. ruff comes with the test extra (`make test`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "ghostnest", "ghostnest_launcher.py",
                           "benchmarks", "tests"],
                          cwd=ROOT, capture_output=True, text=True)
    assert "No module named ruff" not in proc.stderr, "ruff is missing: install the test extra (make test)"
    assert proc.returncode == 0, proc.stdout + proc.stderr
