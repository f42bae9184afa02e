"""New DFT labels for existing snapshots: the same structures, names and splits under another protocol.

The labels of a data set carry its protocol's numerical error (docs/models.md, "Accuracy v3").  A
better protocol does not need new structures: :func:`relabel` plans each given snapshot as it is (its
cell, positions, atomic numbers, name, split, temperature and thermalization record) and computes it
with :func:`~bigdens.datagen.pipeline.generate`, so a relabelling run is resumable, locked and
protocol-checked exactly like ``bigdens datagen``.  Each new snapshot's thermalization record names
the snapshot it was relabelled from (name, protocol, structure digest).

A cell whose recorded calculation is already the new protocol's (the same k-mesh, grid, cutoff,
functional, setups, smearing, tolerance and GPAW version: e.g. a cell relabelled into a protocol
whose rules give it the settings it was computed with) is not computed again: its density is taken over (GPAW repeats a calculation bit
for bit; ``tests/test_relabel.py`` checks it on a real cell) and its provenance says so
(``relabelled_from["same_calculation"]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import InputError
from .dft import _settings_record, compute_snapshot
from .pipeline import generate
from .plan import PlannedSnapshot
from .settings import DFTSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Snapshot


def planned_from(snapshot: "Snapshot") -> PlannedSnapshot:
    """The snapshot's structure as a planned configuration (float64 Å, int atomic numbers), nothing moved."""
    from ..data import structure_digest

    prov = snapshot.provenance
    record = dict(prov.get("thermalization") or {})
    record["relabelled_from"] = {"name": snapshot.name, "protocol": snapshot.protocol,
                                 "structure_digest": structure_digest(snapshot)}
    temperature = snapshot.temperature
    return PlannedSnapshot(
        name=snapshot.name, variant=str(prov.get("variant") or snapshot.name),
        temperature=float(temperature) if temperature is not None else math.nan, index=0, split=snapshot.split,
        cell=np.asarray(snapshot.cell, dtype=np.float64), positions=np.asarray(snapshot.positions, dtype=np.float64),
        numbers=np.asarray(snapshot.numbers, dtype=np.int64), thermalization=record,
    )


def _comparable(record: dict) -> dict:
    # A settings record without the rules that produced its k-mesh and grid (two protocols' rules may agree).
    out = {k: v for k, v in record.items() if k not in ("gpts_rule", "grid_spacing_A")}
    out["kpts"] = {k: v for k, v in (record.get("kpts") or {}).items() if k != "rule"}
    return out


def same_calculation(snapshot: "Snapshot", dft: DFTSettings) -> bool:
    """Whether ``snapshot``'s label is what ``dft`` computes for its cell: the same settings and GPAW version."""
    from importlib.metadata import PackageNotFoundError, version

    prov = snapshot.provenance
    if prov.get("code") != "GPAW" or not isinstance(prov.get("settings"), dict):
        return False
    try:
        installed = version("gpaw")
    except PackageNotFoundError:
        return False
    cell = np.asarray(snapshot.cell, dtype=np.float64)
    wanted = _settings_record(dft, cell, dft.kpts_for(cell), dft.gpts_for(cell))
    return prov.get("code_version") == installed and _comparable(prov["settings"]) == _comparable(wanted)


def _reuse_or_compute(sources: dict[str, "Snapshot"]):
    # generate()'s compute hook: the source's density when it is the same calculation, else GPAW.
    def compute(p: PlannedSnapshot, *, dft: DFTSettings, txt=None) -> "Snapshot":
        from ..data import Snapshot

        src = sources[p.name]
        if not same_calculation(src, dft):
            return compute_snapshot(p, dft=dft, txt=txt)
        cell = np.asarray(src.cell, dtype=np.float64)
        thermalization = dict(p.thermalization)
        thermalization["relabelled_from"] = dict(thermalization["relabelled_from"], same_calculation=True)
        provenance = dict(src.provenance, protocol=dft.protocol, thermalization=thermalization,
                          settings=_settings_record(dft, cell, dft.kpts_for(cell), dft.gpts_for(cell)))
        return Snapshot(name=p.name, cell=p.cell, positions=p.positions, numbers=p.numbers, density=src.density,
                        split=p.split, provenance=provenance)
    return compute


def relabel(snapshots: Sequence["Snapshot"], directory: str | Path, *, dft: DFTSettings, description: str = "",
            max_snapshots: int | None = None, progress: Callable[[str], None] | None = None,
            log_dir: str | Path | None = None) -> Path:
    """Compute ``snapshots`` again with ``dft`` into the data set ``directory`` (made or resumed).

    Parameters
    ----------
    snapshots
        The snapshots to relabel, in the order to compute them; names must be unique.
    directory
        Output data-set directory.  A rerun with the same snapshots and settings resumes it; other
        snapshots or settings are refused (:func:`~bigdens.datagen.pipeline.generate`).
    dft
        The new protocol's settings (:func:`~bigdens.datagen.protocol_settings`).
    description, max_snapshots, progress, log_dir
        As :func:`~bigdens.datagen.pipeline.generate`.

    Returns
    -------
    Path
        The data-set directory.

    Raises
    ------
    InputError
        If ``snapshots`` is empty or names two snapshots alike.
    """
    from ..data import structure_digest

    if not snapshots:
        raise InputError("no snapshots to relabel: give data sets or snapshot files that hold some")
    names = [s.name for s in snapshots]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"snapshot name(s) {', '.join(twice)} occur more than once: relabel each cell once "
                         "(a data set names each snapshot once)")
    request = {"relabel": [{"name": s.name, "split": s.split, "structure_digest": structure_digest(s)}
                           for s in snapshots]}
    sources = sorted({str(s.protocol) for s in snapshots})
    text = description or f"{len(snapshots)} snapshot(s) of protocol {', '.join(sources)} relabelled"
    return generate(directory, lambda: [planned_from(s) for s in snapshots], request=request, dft=dft,
                    description=text, max_snapshots=max_snapshots, progress=progress, log_dir=log_dir,
                    compute=_reuse_or_compute({s.name: s for s in snapshots}))
