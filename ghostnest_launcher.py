"""The ``ghostnest`` console script: the command line without the package's start-up cost.

``import ghostnest`` registers every model family with timm's registry, so that ``timm.create_model("ghostmixnet")``
works after it (timm has no plugin hook: the registration happens when our model modules are imported), and so it
imports torch, torchvision and timm: about 3 s on a 2-core machine. Parsing a command line, ``--version`` and every
``--help`` need none of that. This module, outside the package, loads ``ghostnest/cli.py`` by its path without
running ``ghostnest/__init__.py``; cli.py imports nothing of the package at module level, and each command imports
what it needs when it runs (which imports the package then, registrations included). ``python -m ghostnest`` and
``from ghostnest.cli import main`` take the ordinary route and give the same command line.

docs/architecture.md ("Start-up") has the measured figures and the rule that keeps this working: nothing in cli.py's
module level or in its ``add_*_parser`` functions may import ghostnest's other modules (tests/test_startup.py).
"""
from __future__ import annotations

import importlib.util
import sys


def load_cli():
    """``ghostnest.cli``, loaded without importing the ``ghostnest`` package if that is not imported yet."""
    if "ghostnest.cli" in sys.modules:
        return sys.modules["ghostnest.cli"]
    if "ghostnest" in sys.modules:  # the package is there already: the ordinary import costs nothing more
        import ghostnest.cli

        return ghostnest.cli
    package = importlib.util.find_spec("ghostnest")  # locates the package; runs nothing of it
    if package is None or not package.submodule_search_locations:
        raise ImportError("the ghostnest package is not installed (pip install ghostnest)")
    spec = importlib.util.spec_from_file_location("ghostnest.cli", f"{package.submodule_search_locations[0]}/cli.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ghostnest.cli"] = module  # its relative imports (inside the commands) import the package then
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["ghostnest.cli"]
        raise
    return module


def main(argv: list[str] | None = None) -> int:
    return load_cli().main(argv)


if __name__ == "__main__":
    sys.exit(main())
