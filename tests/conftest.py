"""Shared fixtures: each test gets its own temporary directory and seeded RNG; ``cuda`` tests skip without a GPU."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # The SLURM tests (real jobs) and the real-GPAW tests (real DFT) are slow as well: `pytest -m "not slow"`
    # (the fast lane) leaves them out; tests/run.sh and CI run everything.
    for item in items:
        if (item.get_closest_marker("slurm") or item.get_closest_marker("gpaw")) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    # @pytest.mark.cuda: the test needs a CUDA GPU that torch sees (torch is imported only if one is marked).
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if marked:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU that torch sees")
            for item in marked:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs, so failures reproduce.
    # crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED).
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def model(tmp_path):
    """An untrained Al model file (:func:`helpers.make_model`)."""
    from helpers import make_model

    return make_model(tmp_path / "al.safetensors")


@pytest.fixture(scope="session")
def al4_splits():
    """The training and validation snapshots of tests/data/al4 (real GPAW densities of 4-atom Al cells)."""
    from bigdens import data

    snaps = data.load([Path(__file__).parent / "data" / "al4"])
    return [x for x in snaps if x.split == "train"], [x for x in snaps if x.split == "validation"]


@pytest.fixture
def atoms():
    """A rattled 32-atom Al cell."""
    from bigdens import structure

    return structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)


@pytest.fixture(scope="session")
def local_slurm():
    """The single-node SLURM of cluster_configs/local-slurm/slurm.sh, running and answering.

    Outside CI the SLURM tests skip with the reason when it is not running;
    with CI=true they fail instead (tests/run.sh starts it there).
    """
    import subprocess

    script = Path(__file__).resolve().parent.parent / "cluster_configs" / "local-slurm" / "slurm.sh"
    if subprocess.run(["bash", str(script), "status"], capture_output=True).returncode != 0:
        why = ("the local SLURM is not running (start it with `bash cluster_configs/local-slurm/slurm.sh start`, "
               "as root with apt; tests/run.sh does)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + "; with CI=true the SLURM tests must run")
        pytest.skip(why)


@pytest.fixture(scope="session")
def gpaw():
    """The gpaw module (the dft extra).

    Outside CI a test that needs it skips with the reason when it does not import;
    with CI=true it fails instead (tests/run.sh installs the dft extra there).
    """
    try:
        import gpaw
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"GPAW (the dft extra) does not import ({exc}); with CI=true the GPAW tests must run")
        pytest.skip("GPAW (the dft extra) is not installed")
    return gpaw


@pytest.fixture(scope="session")
def pwx():
    """The path of Quantum ESPRESSO's ``pw.x`` (Debian's ``quantum-espresso``) and its pseudopotential folder.

    Outside CI a test that needs it skips when it is missing; with CI=true it fails instead
    (tests/run.sh installs the package there).
    """
    import shutil

    exe = shutil.which("pw.x")
    pseudo = os.environ.get("PSEUDO_DIR", "/usr/share/espresso/pseudo")
    if exe is None or not os.path.isfile(os.path.join(pseudo, "Si.pz-vbc.UPF")):
        why = "pw.x or its Si.pz-vbc.UPF is missing (apt-get install quantum-espresso)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + "; with CI=true the pw.x tests must run")
        pytest.skip(why)
    return exe, pseudo


@pytest.fixture(autouse=True, scope="session")
def _stop_signals_as_a_terminal_sends_them():
    """The suite runs with SIGINT handled as in a terminal, also when started in the background.

    A shell starts a background command (``cmd &``, ``nohup cmd &``) with SIGINT ignored, and the
    commands the Ctrl-C tests start inherit that: they would never see their Ctrl-C.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
