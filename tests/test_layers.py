"""The package's layer order holds: imports point down (import-linter contract in pyproject.toml)."""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import bigdens

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[list[str]]:
    """The contract's layers, top first, each as its module names."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        config = tomllib.load(fh)["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "layers"]
    return [[name.strip() for name in re.split(r"[|:]", layer)] for layer in contract["layers"]]


def _lint_imports() -> list[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("lint-imports")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("import-linter is not installed: pip install -e '.[test]'")
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return [found]


def test_every_module_has_a_layer():
    # A new module must be placed in the order, or the contract would not check it.
    named = {name for layer in _layers() for name in layer}
    modules = {f"bigdens.{m.name}" for m in pkgutil.iter_modules(bigdens.__path__)}
    assert modules - named == set(), "add these modules to [tool.importlinter] in pyproject.toml"
    assert named - modules == set(), "these names in [tool.importlinter] are not modules of bigdens"


def test_engine_is_below_training_and_commands():
    order = {name: i for i, layer in enumerate(_layers()) for name in layer}
    for low in ("bigdens.engine", "bigdens.store", "bigdens.domain", "bigdens.bnn", "bigdens.data", "bigdens.io"):
        for high in ("bigdens.train", "bigdens.active", "bigdens.datagen", "bigdens.cli"):
            assert order[low] > order[high], (low, high)


def test_imports_point_down():
    r = subprocess.run([*_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def _imports() -> dict[str, set[str]]:
    """Module -> the bigdens modules it imports anywhere in its source: at the top, in functions, under TYPE_CHECKING."""
    import ast

    files = {}
    for path in (ROOT / "bigdens").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, parts[:-1])
    graph = {}
    for name, (path, package) in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""] if node.level
                                else [node.module or ""]).rstrip(".")
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or ({base} & files.keys())
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & files.keys()
        graph[name] = deps - {name}
    return graph


def test_no_import_circles():
    # Two modules that import each other (lazily in a function or for type hints only, too) are one module
    # in two files: what they share belongs in one of them or below both.  A package's __init__ and its own
    # modules aside (bigdens.io dispatches to its readers, which take the shared DensityFile from it).
    graph = _imports()
    related = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    graph = {a: {b for b in deps if not related(a, b)} for a, deps in graph.items()}
    index, low, stack, circles = {}, {}, [], []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert graph["bigdens.cli.learn"] >= {"bigdens.cli.suggest", "bigdens.cli._common"}  # lazy imports are seen
    assert circles == []
