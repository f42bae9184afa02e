"""Packaging: the wheel holds the shipped profiles and models, and works after a plain install.

The end-to-end test builds the wheel (no build isolation, no network), installs it into a fresh
venv of the base interpreter, and from a folder outside the repository runs ``bigdens clusters``
and a tiny ``bigdens predict`` with the shipped Al model.  The venv gets the project's
dependencies through a ``.pth`` line naming this interpreter's site-packages (nothing is
downloaded); ``bigdens`` itself comes only from the wheel: that folder's own ``.pth`` files (an
editable install's finder) are not processed, and the venv's site-packages comes first.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "cluster_configs"
# Top-level folders the build does not read (the copy of the source tree leaves them out).
NOT_BUILT = {".git", ".venv", "build", "dist", "datasets", "benchmarks", "docs", "tests", "examples", "runs",
             "tmp", ".pytest_cache", ".import_linter_cache", ".ci"}


def _package_data() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]


def test_package_data_patterns_name_files_that_exist():
    for package, patterns in _package_data().items():
        folder = ROOT / package.replace(".", "/")
        for pattern in patterns:
            assert [p for p in folder.glob(pattern) if p.is_file()], f"{package}: {pattern!r} names no file"


def test_shipped_profiles_are_package_data_of_the_one_top_level_folder():
    from bigdens import clusters

    # bigdens/cluster_configs is the symlink to cluster_configs/ that the build copies from.
    link = ROOT / "bigdens" / "cluster_configs"
    assert link.is_symlink() and link.resolve() == PROFILES.resolve()
    assert clusters.shipped_profile_dir() == PROFILES.resolve()
    assert set(clusters.list_profiles()) >= {p.stem for p in PROFILES.glob("*.yaml")}


def _ignore_unbuilt(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".zarr", ".pyc"))}
    return skip | (NOT_BUILT & set(names) if Path(folder) == ROOT else set())


def _run(args, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    try:
        setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        setuptools_major = 0
    if setuptools_major < 77:
        pytest.skip("building the wheel without build isolation needs setuptools>=77 in this environment")

    # Build from a copy of the source tree, so that no build/ or egg-info is written into the repository.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore_unbuilt)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index",
          "--no-cache-dir", "-q", "-w", wheels])
    (wheel,) = wheels.glob("bigdens-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for profile in PROFILES.glob("*.yaml"):  # copies of the top-level files, byte for byte
            assert z.read(f"bigdens/cluster_configs/{profile.name}") == profile.read_bytes()
    assert {"bigdens/models/al.safetensors", "bigdens/models/sige.safetensors", "bigdens/models/SHA256SUMS"} <= names

    # A fresh venv of the base interpreter; the dependencies come from this interpreter's site-packages.
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--no-cache-dir",
          "-q", wheel])
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    deps = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    (purelib / "bigdens-test-deps.pth").write_text("".join(f"{d}\n" for d in dict.fromkeys(deps)))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    work = tmp_path / "work"  # outside the repository: nothing there is importable as bigdens
    work.mkdir()
    installed = purelib / "bigdens"
    r = _run([python, "-c", "import bigdens; print(bigdens.__file__)"], cwd=work, env=env)
    assert Path(r.stdout.strip()).parent == installed

    bigdens = venv / "bin" / "bigdens"
    r = _run([bigdens, "clusters"], cwd=work, env=env)
    for profile in PROFILES.glob("*.yaml"):
        line = next((s for s in r.stdout.splitlines() if s.startswith(profile.stem + " ")), None)
        assert line is not None, f"{profile.stem} not listed:\n{r.stdout}"
        assert f"[{installed / 'cluster_configs' / profile.name}]" in line
    r = _run([bigdens, "clusters", "local-slurm"], cwd=work, env=env)
    assert "#SBATCH" in r.stdout

    from ase.io import write

    from bigdens import store, structure

    write(work / "al.xyz", structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2))
    r = _run([bigdens, "predict", "al.xyz", "--out", "al.zarr", "--grid", "24", "24", "24", "--block", "12",
              "--mc-samples", "5", "--workers", "1", "--threads-per-worker", "1"], cwd=work, env=env)
    attrs = store.read_attrs(work / "al.zarr")
    assert attrs["complete"] and attrs["in_domain"], r.stdout
    assert Path(attrs["model_path"]).resolve() == (installed / "models" / "al.safetensors").resolve()
    assert attrs["n_electrons_expected"] == 96
    assert attrs["n_electrons_predicted"] == pytest.approx(96, abs=0.5), r.stdout
