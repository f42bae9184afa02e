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
