"""Imports inside ``ghostnest/`` run one way and never in a circle.

The graph is read from the package's own source with :mod:`ast` (every ``import`` statement, at module level or
inside a function, since a deferred import is still a dependency), so the test needs no import of the package.
Two checks:

- **no cycle**: the strongly connected components of the graph (Tarjan) all have one module; a new cycle fails
  with the modules that form it.
- **one direction**: commands (the CLI) over deployment and reports over training over the base (data, models,
  layers, ...). A module may import its own layer or a lower one, never a higher one (:data:`LAYERS`; modules
  that are in no layer yet are checked for cycles only).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ghostnest"

# Highest first. A module belongs to the first layer whose prefix names it or a package above it.
LAYERS = (
    ("commands", ("ghostnest.cli", "ghostnest.__main__")),
    ("deployment and reports", ("ghostnest.export", "ghostnest.quantize", "ghostnest.report", "ghostnest.bench",
                                "ghostnest.explain", "ghostnest.hub", "ghostnest.backbones")),
    ("training", ("ghostnest.train",)),
    ("data, models, layers and their tools", (
        "ghostnest.data", "ghostnest.models", "ghostnest.layers", "ghostnest.registry", "ghostnest.stats",
        "ghostnest.fuse", "ghostnest.onnx_graph", "ghostnest.modelfile", "ghostnest.devices", "ghostnest.fileio",
        "ghostnest.weights", "ghostnest.normalization", "ghostnest.figures")),
)


def module_name(path: Path) -> str:
    parts = ["ghostnest", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` (file ``path``) imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from X import Y` imports the module X.Y when there is one, else the name Y of X
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import ghostnest.train.config` -> the module itself
                target = target.rpartition(".")[0]
            if target and target != name and target != "ghostnest":
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> int | None:
    for level, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    return None


def test_the_detector_finds_a_cycle_and_reads_relative_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    real = import_graph()
    assert "ghostnest.train.checkpoint" in real["ghostnest.train.engine"]  # `from .checkpoint import ...`
    assert "ghostnest.data" in real["ghostnest.train.engine"]  # `from ..data import ...` (a package)
    assert "ghostnest.fileio" in real["ghostnest.train.metrics"]


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found, "import cycle(s): " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_run_from_commands_down_to_the_layers():
    wrong = []
    for name, targets in import_graph().items():
        mine = layer_of(name)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs is not None and theirs < mine:
                wrong.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not wrong, "imports against the direction commands -> deployment -> training -> base:\n" + "\n".join(wrong)
