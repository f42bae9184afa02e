"""The whole run: plan, then one DFT per snapshot into the data set, resumable and locked.

:func:`generate` makes or resumes a data set: it reuses the directory's
``plan.json`` (or makes and saves the plan), computes only the snapshots that
the manifest does not list yet and writes each one atomically into the data
set (:mod:`bigdens.data`).  A lock file (``.datagen.lock``) keeps two runs
from writing the same directory.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .._imports import attempt_import
from ..errors import InputError
from .dft import compute_snapshot
from .plan import PLAN_FILE, PlannedSnapshot, load_plan, save_plan
from .potentials import potential_name
from .settings import DFTSettings, MDSettings

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Progress lines of the plan and the DFT runs, at INFO (a child of ``bigdens.datagen``; ``bigdens datagen``
#: shows them).
logger = logging.getLogger(__name__)

LOCK_FILE = ".datagen.lock"


def check_requirements(variants: dict[str, "Atoms"], *, md: MDSettings, dft: bool = True) -> None:
    """Fail before any MD or DFT if a package the run needs is missing.

    GPAW for the DFT (unless ``dft`` is False: MD only), and matscipy when a
    variant is thermalized with the Tersoff Si-Ge potential.

    Raises
    ------
    MissingDependencyError
        Naming the package and the command that installs the ``dft`` extra.
    """
    if dft:
        attempt_import("gpaw", purpose="computing DFT densities (bigdens datagen)")
    if any(potential_name(atoms, potential=md.potential) == "tersoff-sige" for atoms in variants.values()):
        attempt_import("matscipy", purpose="thermalizing Si/Ge with the Tersoff potential")


class _DirLock:
    """An exclusive lock file for a data-set directory (stale locks are taken over)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid = self.path.read_text().split()
                    pid = int(pid)
                except (OSError, ValueError):
                    host, pid = "", -1
                if host == socket.gethostname() and pid > 0 and self._alive(pid):
                    raise InputError(
                        f"another 'bigdens datagen' (pid {pid}) is writing to {str(self.path.parent)!r}; "
                        "wait for it or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise InputError(f"cannot lock {str(self.path)!r}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def generate(
    directory: str | Path,
    plan_factory: Callable[[], list[PlannedSnapshot]],
    *,
    request: dict[str, Any],
    dft: DFTSettings = DFTSettings(),
    description: str = "",
    max_snapshots: int | None = None,
    progress: Callable[[str], None] | None = None,
    log_dir: str | Path | None = None,
) -> Path:
    """Make or resume a data set in ``directory``.

    Parameters
    ----------
    directory
        Output data-set directory (created if needed).
    plan_factory
        Called (once, when ``plan.json`` does not exist yet) to thermalize and
        plan the snapshots.
    request
        JSON-compatible description of everything that defines the run; a
        resumed run must have the same.
    dft
        DFT settings.
    description
        Free text stored in the manifest.
    max_snapshots
        Stop after computing this many new snapshots (None: all).
    progress
        Receives the progress lines (one per event) instead of the module
        logger (``bigdens.datagen.pipeline``, INFO); default None: the logger.
    log_dir
        Directory for GPAW's text logs (one per snapshot), or None.

    Returns
    -------
    Path
        The data-set directory.
    """
    say = progress or logger.info
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    request = dict(request, protocol=dft.protocol, dft_settings=asdict(dft))
    with _DirLock(directory):
        plan = _load_or_make_plan(directory, plan_factory, request=request, say=say)
        manifest = _open_manifest(directory, dft=dft, description=description)
        done = {e["name"] for e in manifest["snapshots"] if (directory / e["file"]).is_file()}
        _check_done_match_plan(directory, manifest, plan, done)
        todo = [p for p in plan if p.name not in done]
        if max_snapshots is not None:
            todo = todo[:max_snapshots]
        say(f"{len(done)} of {len(plan)} snapshots exist; computing {len(todo)}")
        _compute(directory, todo, manifest, first=len(done) + 1, total=len(plan), dft=dft, say=say,
                 log_dir=log_dir)
    return directory


def _load_or_make_plan(directory: Path, plan_factory: Callable[[], list[PlannedSnapshot]], *,
                       request: dict[str, Any], say: Callable[[str], None]) -> list[PlannedSnapshot]:
    # The saved plan.json of a resumed run, else a new plan, saved before any DFT.
    plan = load_plan(directory, request=request)
    if plan is None:
        plan = plan_factory()
        save_plan(directory, plan, request=request)
        say(f"planned {len(plan)} snapshots in {str(directory / PLAN_FILE)!r}")
    return plan


def _open_manifest(directory: Path, *, dft: DFTSettings, description: str) -> dict:
    # The data set's manifest (a new one if there is none); InputError if it holds another protocol.
    from ..data import MANIFEST, new_manifest, read_manifest

    if not (directory / MANIFEST).is_file():
        return new_manifest(protocol=dft.protocol, description=description)
    manifest = read_manifest(directory)
    if manifest.get("protocol") != dft.protocol:
        raise InputError(
            f"{str(directory)!r} holds protocol {manifest.get('protocol')!r} data, not {dft.protocol!r}; "
            "write to a new directory"
        )
    if description:
        manifest["description"] = description
    return manifest


def _compute(directory: Path, todo: list[PlannedSnapshot], manifest: dict, *, first: int, total: int,
             dft: DFTSettings, say: Callable[[str], None], log_dir: str | Path | None) -> None:
    # The DFT of each snapshot of todo in turn, each added to the data set as soon as it is done.
    from ..data import add_snapshot
    from ..structure import species_counts

    t_start = time.perf_counter()
    for i, p in enumerate(todo):
        atoms = p.atoms()
        counts = ", ".join(f"{n} {s}" for s, n in species_counts(atoms).items())
        say(f"[{first + i}/{total}] {p.name}: {counts}, {p.temperature:g} K, split {p.split}, "
            f"k {dft.kpts_for(atoms.cell[:])}, grid {dft.gpts_for(atoms.cell[:])} ...")
        txt = Path(log_dir) / f"{directory.name}-{p.name}.txt" if log_dir else None
        snap = compute_snapshot(p, dft=dft, txt=txt)
        manifest = add_snapshot(directory, snap, manifest=manifest)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / (i + 1) * (len(todo) - i - 1)
        timing = snap.provenance["timing"]
        say(f"    done in {timing['wall_seconds']:.0f} s wall, {timing['core_seconds']:.0f} "
            f"core-s; {snap.provenance['electron_integral']:.6f} electrons; ETA {eta / 60:.0f} min")


def _check_done_match_plan(directory: Path, manifest: dict, plan: list[PlannedSnapshot], done: set[str]) -> None:
    # A snapshot already in the data set must be the planned configuration
    # (a plan made again, e.g. after deleting plan.json, may differ).
    planned = {p.name: p for p in plan}
    for entry in manifest["snapshots"]:
        p = planned.get(entry["name"])
        if p is None or entry["name"] not in done:
            continue
        with np.load(directory / entry["file"], allow_pickle=False) as z:
            same = z["positions"].shape == p.positions.shape and np.allclose(z["positions"], p.positions, atol=1e-8)
        if not same:
            raise InputError(
                f"snapshot {entry['name']!r} in {str(directory)!r} is not the configuration of plan.json (the plan "
                "was made again?); remove that snapshot (its .npz and manifest entry) or restore the old plan.json"
            )
