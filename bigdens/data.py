"""Data sets of DFT density snapshots: the on-disk format and its reader.

Format ``bigdens-dataset``, version 1
-------------------------------------
A data set is a directory holding

``dataset.json``
    The manifest (UTF-8 JSON)::

        {
          "format": "bigdens-dataset",
          "format_version": 1,
          "protocol": "bigdens-dft-v1",      # DFT settings shared by every snapshot
                                             # ("mixed" only if explicitly allowed)
          "description": "...",
          "created": "2026-11-25T21:50:00+00:00",
          "bigdens_version": "0.1.0",
          "snapshots": [
            {
              "file": "al32-T0300-00.npz",   # relative to the directory
              "name": "al32-T0300-00",
              "split": "train",              # "train" | "validation" | "test"
              "temperature": 300.0,          # K (null when unknown)
              "n_atoms": 32,
              "species": {"Al": 32},
              "grid_shape": [44, 44, 44],
              "electron_integral": 96.0000,  # Σρ·dV, electrons
              "n_electrons_expected": 96,    # valence electrons of the setups
              "dft_core_seconds": 118.2,     # CPU time of the DFT run (null when unknown)
              "dft_wall_seconds": 119.0,
              "protocol": "bigdens-dft-v1",
              "digest": "3f9c...",           # structure_digest: sha256 of the cell, positions,
                                             # numbers (absent in manifests written before it)
            }, ...
          ]
        }

    Only complete snapshots are listed: a snapshot file is written to a
    temporary name and renamed, and the manifest is rewritten (also via a
    temporary file and a rename) after each one.

``<name>.npz``
    One compressed NumPy archive per snapshot (``np.savez_compressed``), read
    with ``allow_pickle=False``:

    ============== =============== ======== ==========================================
    array          shape           dtype    meaning
    ============== =============== ======== ==========================================
    ``cell``       (3, 3)          float64  lattice vectors as rows, Å
    ``positions``  (n_atoms, 3)    float64  Cartesian positions, Å
    ``numbers``    (n_atoms,)      int32    atomic numbers
    ``density``    (n1, n2, n3)    float32  valence (pseudo-)density, e/Å³
    ``provenance`` ()              unicode  JSON text (a 0-d string array)
    ``split``      ()              unicode  ``"train"``, ``"validation"`` or ``"test"``
                                            (absent in files written before it)
    ============== =============== ======== ==========================================

    Positions are as the MD left them: not necessarily wrapped into the
    cell (every periodic image is equivalent).  The density grid follows
    DESIGN §1: point ``(i, j, k)`` sits at fractional
    position ``(i/n1, j/n2, k/n3)`` (point (0, 0, 0) on the cell origin).  The
    provenance holds the DFT code and version, every DFT setting, the
    thermalization (potential, temperature, time step, time of the
    snapshot), the wall time and core-seconds of the DFT run, and the
    electron integral.

The split travels with the snapshot file
----------------------------------------
A snapshot file records its split, so a cell keeps it when it is loaded by
path or copied elsewhere (:func:`read_snapshot` says which record wins).  A
file written before the ``split`` array existed takes the split of its entry
in the ``dataset.json`` next to it.  And whatever a file records, a snapshot
with the structure of a test cell shipped in ``datasets/`` is one: its
:func:`structure_digest` is in the package's registry of them
(``bigdens/test_cells.json``, :func:`shipped_test_cells`), which
:func:`refuse_test_cells` consults, so that calibration and training refuse a
renamed copy of a test cell too.

Other inputs
------------
:func:`load` also reads Gaussian cube files (``.cube``), VASP ``CHGCAR``
files (any name containing ``CHGCAR`` or ``.vasp``/``.chgcar``), GPAW
``.gpw`` files and XSF files (``.xsf``, e.g. Quantum ESPRESSO's ``pp.x``) directly (see :mod:`bigdens.io`); they become snapshots with
split ``"train"`` unless ``split=`` says otherwise.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import atomic_write, write_bytes
from .chemistry import HGH_VALENCE, hgh_valence  # noqa: F401  (re-exported from bigdens.data)
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from .io import DensityFile

    from .grid import Grid

FORMAT_NAME = "bigdens-dataset"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"
SPLITS = ("train", "validation", "test")
#: The arrays every snapshot file holds (``split`` is optional: files written before it lack it).
ARRAYS = ("cell", "positions", "numbers", "density", "provenance")
#: The registry of the shipped test cells' structure digests (:func:`shipped_test_cells`).
TEST_CELLS = Path(__file__).with_name("test_cells.json")
TEST_CELLS_FORMAT = "bigdens-test-cells"

@dataclass(frozen=True)
class Snapshot:
    """One DFT density on a periodic grid, with its structure.

    Attributes
    ----------
    name : str
        Identifier, unique within a data set.
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å.
    positions : ndarray, shape (n_atoms, 3), float64
        Cartesian positions, Å.
    numbers : ndarray, shape (n_atoms,), int
        Atomic numbers.
    density : ndarray, shape (n1, n2, n3), float32
        Valence (pseudo-)density, e/Å³, on the grid of DESIGN §1.
    split : str
        ``"train"``, ``"validation"`` or ``"test"``.
    provenance : dict
        How the snapshot was made (JSON-compatible).
    """

    name: str
    cell: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    density: np.ndarray
    split: str = "train"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        cell = np.asarray(self.cell, dtype=np.float64)
        pos = np.asarray(self.positions, dtype=np.float64)
        numbers = np.asarray(self.numbers).astype(np.int64)
        dens = np.asarray(self.density, dtype=np.float32)
        where = f"snapshot {self.name!r}"
        if cell.shape != (3, 3) or not np.isfinite(cell).all():
            raise InputError(f"{where}: cell must be a finite 3×3 array (Å), got shape {cell.shape}")
        if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(numbers) or numbers.ndim != 1:
            raise InputError(
                f"{where}: positions must have shape (n_atoms, 3) and numbers (n_atoms,), "
                f"got {pos.shape} and {numbers.shape}"
            )
        if dens.ndim != 3 or min(dens.shape) < 1:
            raise InputError(f"{where}: density must be a 3-D grid (n1, n2, n3), got shape {dens.shape}")
        _check_volume(cell, where)
        if not np.isfinite(dens).all():
            n_bad = int(np.count_nonzero(~np.isfinite(dens)))
            raise InputError(
                f"{where}: the density holds {n_bad} NaN or infinite value(s); the DFT run or the file "
                "is broken: regenerate or drop this snapshot"
            )
        if self.split not in SPLITS:
            raise InputError(f"{where}: split must be one of {SPLITS}, got {self.split!r}")
        t = _recorded_temperature(self.provenance)
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise InputError(f"{where}: the recorded temperature must be > 0 K, got {t!r}")
        for name, value in (("cell", cell), ("positions", pos), ("numbers", numbers), ("density", dens)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    # -- derived quantities -------------------------------------------------
    def atoms(self) -> "Atoms":
        """The structure as :class:`ase.Atoms` (``pbc=True``, Å)."""
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)

    def grid(self) -> "Grid":
        """The density's grid (:class:`bigdens.grid.Grid`)."""
        from .grid import Grid

        return Grid(cell=self.cell, shape=self.density.shape)

    @property
    def n_electrons_expected(self) -> float:
        """Valence electron count: ``provenance["n_electrons_expected"]`` if set, else from HGH valences."""
        value = self.provenance.get("n_electrons_expected")
        return float(value) if value is not None else float(hgh_valence(self.numbers))

    @property
    def electron_integral(self) -> float:
        """``Σρ·dV`` over the grid, electrons (float64 sum)."""
        return electron_integral(self.cell, self.density)

    @property
    def protocol(self) -> str | None:
        """Name of the DFT protocol (``provenance["protocol"]``), or None."""
        return self.provenance.get("protocol")

    @property
    def temperature(self) -> float | None:
        """Temperature of the snapshot, K, or None if unknown.

        The thermostat temperature of its MD (``thermalization.temperature_K``),
        else the one recorded on import (``temperature_K``).
        """
        value = _recorded_temperature(self.provenance)
        return None if value is None else float(value)

    @property
    def dft_core_seconds(self) -> float | None:
        """CPU core-seconds the DFT calculation took (``timing.core_seconds``), or None if unknown."""
        t = self.provenance.get("timing")
        value = t.get("core_seconds") if isinstance(t, dict) else None
        return None if value is None else float(value)

    def with_split(self, split: str) -> "Snapshot":
        """Copy with another split."""
        return Snapshot(self.name, self.cell, self.positions, self.numbers, self.density, split, self.provenance)


#: Share of the electrons that may sit in negative density values by default (``check_physical``).
NEGATIVE_TOLERANCE = 1e-3


def _check_volume(cell: np.ndarray, where: str) -> None:
    # A density grid needs a 3-D cell: linearly independent lattice vectors (for a cube file: voxel
    # vectors × point counts), else Σρ·dV is 0 and every grid point sits on a plane.
    with np.errstate(all="ignore"):
        volume = abs(float(np.linalg.det(cell)))
        if not volume > 1e-6 * max(float(np.linalg.norm(cell, axis=1).prod()), 1e-300):
            raise InputError(
                f"{where}: the cell is singular (volume {volume:.3g} Å³, lattice vectors "
                f"{np.round(cell, 6).tolist()} Å; a cube file's are its voxel vectors × point counts): a "
                "zero or degenerate vector means the file is damaged"
            )


def electron_integral(cell, density) -> float:
    """``Σρ·dV`` of ``density`` (n1, n2, n3), e/Å³, on the grid of ``cell`` (3, 3), Å: electrons (float64 sum)."""
    rho = np.asarray(density)
    return float(rho.sum(dtype=np.float64)) * abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64)))) / rho.size


#: Largest relative difference between an imported density's electron integral and the valence count of
#: its atoms in the protocol's HGH setups (``check_valence``; ``bigdens data import --allow-electron-mismatch``).
VALENCE_TOLERANCE = 0.05


def check_valence(numbers, cell, density, *, where: str, tolerance: float | None = VALENCE_TOLERANCE) -> None:
    """Refuse a density whose electrons are not the valence electrons of its atoms.

    The models learn valence densities of GPAW's HGH setups (:data:`bigdens.chemistry.HGH_VALENCE`):
    a density that integrates to another count belongs to other pseudopotentials (PAW semicore
    states, all-electron), other units, or another structure, or holds a corrupt value.

    Parameters
    ----------
    numbers : array_like, shape (n_atoms,)
        Atomic numbers.
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    density : array_like, shape (n1, n2, n3)
        Electron density, e/Å³ (already through :func:`check_physical`).
    where
        What the density is, for the messages.
    tolerance
        Largest accepted |N_integral / N_valence − 1|; None skips the count (elements are still checked).

    Raises
    ------
    InputError
        An element without an HGH setup (or an atomic number that is no element), or the count
        off by more than ``tolerance``, with both numbers and what to do.
    """
    from .chemistry import hgh_valence

    z = np.asarray(numbers).reshape(-1)
    try:
        expected = hgh_valence(z)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if tolerance is None or expected == 0:
        return
    total = electron_integral(cell, density)
    ratio = total / expected
    if abs(ratio - 1.0) > tolerance:
        raise InputError(
            f"{where}: the density integrates to {total:.6g} electrons, but its {len(z)} atoms have {expected} valence "
            f"electrons in the HGH setups bigdens learns (ratio {ratio:.4g}, more than {tolerance:.0%} off): "
            "a density of other pseudopotentials (semicore or all-electron), other units (--cube-units, "
            "--xsf-units) or another structure, or a corrupt value; pass --allow-electron-mismatch to import it anyway"
        )


def check_physical(cell, density, *, where: str, allow_negative: float = NEGATIVE_TOLERANCE) -> None:
    """Refuse a density that cannot be a physical electron density.

    Checks, in this order: the cell is not singular (no zero or linearly
    dependent lattice/voxel vector); every value is finite; not every value
    is ≤ 0; the electron integral Σρ·dV is > 0; and the electrons in negative
    values, ``−Σ min(ρ, 0)·dV``, are at most ``allow_negative`` times the
    integral.  PAW pseudo-densities (VASP CHGCAR) can dip below zero near the
    cores; raise ``allow_negative`` to accept them.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    density : array_like, shape (n1, n2, n3)
        Electron density, e/Å³.
    where
        What the density is, for the messages (e.g. ``"density file 'CHGCAR'"``).
    allow_negative
        Largest accepted share of the electrons in negative values, within [0, 1).

    Raises
    ------
    InputError
        Naming the first failed check, the numbers, and what to do.
    """
    if isinstance(allow_negative, bool) or not (isinstance(allow_negative, (int, float, np.floating))
                                                and 0.0 <= allow_negative < 1.0):
        raise InputError(f"allow_negative must be a fraction of the electrons within [0, 1), got {allow_negative!r}; "
                         f"e.g. {NEGATIVE_TOLERANCE}")
    cell = np.asarray(cell, dtype=np.float64)
    rho = np.asarray(density)
    _check_volume(cell, where)
    n_bad = int(np.count_nonzero(~np.isfinite(rho)))
    if n_bad:
        raise InputError(f"{where}: the density holds {n_bad} NaN or infinite value(s); the DFT run or the file is "
                         "broken: regenerate or drop it")
    if float(rho.max()) <= 0.0:
        raise InputError(
            f"{where}: every density value is <= 0 (max {float(rho.max()):.3g} e/Å³): not an electron density "
            "(an orbital, a difference density, or a sign flip?); import total valence densities only"
        )
    dv = abs(float(np.linalg.det(cell))) / rho.size
    total = electron_integral(cell, rho)
    negative = -float(np.minimum(rho, 0.0).sum(dtype=np.float64)) * dv
    if not total > 0.0:
        raise InputError(
            f"{where}: the density integrates to {total:.4g} electrons (<= 0; its negative values hold "
            f"{negative:.4g}): not an electron density (a difference density?); import total valence densities only"
        )
    if negative > allow_negative * total:
        share = negative / total
        suggest = _round_up(share)
        todo = (f"a PAW pseudo-density can dip below zero: accept it with --allow-negative {suggest:g}"
                if suggest < 1.0 else "far too much for a pseudo-density: the file is damaged")
        raise InputError(
            f"{where}: {negative:.4g} of its {total:.4g} electrons (a share of {share:.3g}) sit in negative "
            f"density values (min {float(rho.min()):.3g} e/Å³), more than the accepted share {allow_negative:g}; "
            f"{todo}"
        )


def _round_up(fraction: float) -> float:
    # A tolerance just above `fraction` (> 0), one significant digit: 0.0123 -> 0.02, 0.1 -> 0.2.
    digits = -int(math.floor(math.log10(fraction)))
    return (math.floor(fraction * 10.0**digits) + 1) / 10.0**digits


def _recorded_temperature(provenance: dict) -> Any:
    # thermalization.temperature_K (datagen), else temperature_K (bigdens data import --temperature).
    t = provenance.get("thermalization")
    value = t.get("temperature_K") if isinstance(t, dict) else None
    return provenance.get("temperature_K") if value is None else value


# -- writing -----------------------------------------------------------------
def write_snapshot(path: str | Path, snapshot: Snapshot) -> Path:
    """Write one snapshot as a compressed ``.npz`` (atomically: temp file + rename).

    The file records the snapshot's split (array ``split``), so that it keeps it when loaded by path.
    """
    path = Path(path)
    arrays = dict(
        cell=snapshot.cell.astype(np.float64),
        positions=snapshot.positions.astype(np.float64),
        numbers=snapshot.numbers.astype(np.int32),
        density=snapshot.density.astype(np.float32),
        provenance=np.array(json.dumps(snapshot.provenance, sort_keys=True)),
        split=np.array(snapshot.split),
    )
    with atomic_write(path) as fh:
        np.savez_compressed(fh, **arrays)
    return path


def snapshot_entry(snapshot: Snapshot, *, file: str) -> dict[str, Any]:
    """The manifest entry of ``snapshot`` stored as ``file``."""
    from .structure import species_counts

    prov = snapshot.provenance
    return {
        "file": file,
        "name": snapshot.name,
        "split": snapshot.split,
        "temperature": snapshot.temperature,
        "n_atoms": int(len(snapshot.numbers)),
        "species": species_counts(snapshot.atoms()),
        "grid_shape": list(snapshot.density.shape),
        "electron_integral": round(snapshot.electron_integral, 6),
        "n_electrons_expected": snapshot.n_electrons_expected,
        "dft_core_seconds": prov.get("timing", {}).get("core_seconds"),
        "dft_wall_seconds": prov.get("timing", {}).get("wall_seconds"),
        "protocol": snapshot.protocol,
        "digest": structure_digest(snapshot),
    }


def structure_digest(snapshot) -> str:
    """sha256 (64 hex digits) of a snapshot's structure: cell (float64, Å), positions (float64, Å), then
    atomic numbers (int64), as bytes in C order.

    Neither the name nor the density enters: a renamed or moved copy of a snapshot file, or a DFT
    of the same configuration at other settings, has the same digest.  Equal to
    :func:`bigdens.store.structure_hash` of the same arrays (the key of the active-learning DFT
    cache).  Positions count as stored: a copy with wrapped or rounded positions (an export to a
    cube file) is another structure here.

    ``snapshot``: anything with ``cell``, ``positions`` and ``numbers`` (a :class:`Snapshot`).
    """
    h = hashlib.sha256()
    for arr, dtype in ((snapshot.cell, np.float64), (snapshot.positions, np.float64), (snapshot.numbers, np.int64)):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h.hexdigest()


def new_manifest(*, protocol: str | None, description: str = "") -> dict[str, Any]:
    """An empty manifest."""
    from ._version import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "protocol": protocol,
        "description": description,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bigdens_version": __version__,
        "snapshots": [],
    }


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``dataset.json`` atomically."""
    path = Path(directory) / MANIFEST
    text = json.dumps(manifest, indent=1, sort_keys=False).encode()
    write_bytes(path, text)
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check ``dataset.json`` of a data-set directory.

    Raises
    ------
    InputError
        If the manifest is missing, not JSON, of another format, or of a newer
        format version.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise InputError(f"{str(directory)!r} is not a bigdens data set (no {MANIFEST} in it)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(path)!r} ({exc}); the manifest is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise InputError(f"{str(path)!r} is not a {FORMAT_NAME!r} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{str(path)!r} has format version {version!r}; this bigdens reads versions <= {FORMAT_VERSION}: "
            "upgrade bigdens"
        )
    if not isinstance(manifest.get("snapshots"), list):
        raise InputError(f"{str(path)!r} has no 'snapshots' list")
    return manifest


def add_snapshot(
    directory: str | Path,
    snapshot: Snapshot,
    *,
    manifest: dict[str, Any],
    allow_mixed_protocols: bool = False,
) -> dict[str, Any]:
    """Write ``snapshot`` into a data-set directory and record it in its manifest.

    The snapshot file is written first (atomically), then the manifest; an
    entry of the same name is replaced.  Returns the updated manifest.

    Parameters
    ----------
    directory
        The data-set directory (must exist).
    snapshot
        The snapshot to add.
    manifest
        The data set's manifest (:func:`new_manifest` or :func:`read_manifest`).
    allow_mixed_protocols
        Accept a snapshot whose protocol is not the data set's; the manifest's
        protocol then becomes ``"mixed"``.

    Raises
    ------
    InputError
        If the snapshot's protocol differs from the data set's (unless
        allowed); nothing is written then.
    """
    directory = Path(directory)
    have = manifest.get("protocol")
    if have not in (None, "mixed") and snapshot.protocol != have:
        if not allow_mixed_protocols:
            raise InputError(
                f"snapshot {snapshot.name!r} has protocol {snapshot.protocol!r} but the data set "
                f"{str(directory)!r} holds {have!r} data; add it to another data set, or pass "
                "allow_mixed_protocols=True (--allow-mixed-protocols) if you mean it"
            )
        manifest = dict(manifest, protocol="mixed")
    file = f"{snapshot.name}.npz"
    write_snapshot(directory / file, snapshot)
    entries = [e for e in manifest["snapshots"] if e["name"] != snapshot.name]
    entries.append(snapshot_entry(snapshot, file=file))
    manifest = dict(manifest, snapshots=entries)
    write_manifest(directory, manifest)
    return manifest


# -- reading -----------------------------------------------------------------
def read_snapshot(path: str | Path, *, name: str | None = None, split: str | None = None,
                  default: str = "train") -> Snapshot:
    """Read one snapshot ``.npz``, with the split it records.

    The snapshot's split, in this order:

    1. ``"test"`` if the file records split ``"test"`` or its entry in the ``dataset.json`` of its
       folder does: a test cell stays one however it is loaded, so ``split=`` cannot relabel it;
    2. ``split``, when given (another split for a train or validation cell, as the active-learning
       loop puts some picks into its calibration split);
    3. the split the file records (array ``split``, written by :func:`write_snapshot`), else that of
       its entry in the ``dataset.json`` of its folder (files written before the array existed);
    4. ``default``.

    The file's entry in ``dataset.json`` is the one whose ``file`` is its name; the file must match
    it (its ``digest``, or in manifests written before digests its ``n_atoms`` and ``grid_shape``).
    A copy elsewhere, under another name, carries only what the file records; a structure among the
    shipped test cells is caught by :func:`refuse_test_cells` whatever it records.

    Parameters
    ----------
    path
        The ``.npz`` file.
    name
        The snapshot's name; default: its manifest entry's, else the file name without ``.npz``.
    split
        The split to give the snapshot, unless it is a test cell (1. above); None: as recorded.
    default
        The split of a snapshot that records none, in the file or in a manifest.

    Raises
    ------
    InputError
        If the file is missing, damaged, lacks an array, or holds NaN; if it does not match its
        manifest entry; if the manifest next to it is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"snapshot file {str(path)!r} does not exist")
    return _read(path, entry=_manifest_entry(path), name=name, split=split, default=default)


def _read(path: Path, *, entry: dict | None, name: str | None, split: str | None, default: str) -> Snapshot:
    # One snapshot file, with its manifest entry (None: not listed in a manifest).
    arrays = _read_arrays(path, (*ARRAYS, "split"))
    try:
        provenance = json.loads(str(arrays["provenance"]))
    except ValueError:
        raise InputError(f"snapshot {str(path)!r}: its provenance is not valid JSON") from None
    snap = Snapshot(
        name=name or (entry or {}).get("name") or path.stem,
        cell=arrays["cell"],
        positions=arrays["positions"],
        numbers=arrays["numbers"],
        density=arrays["density"],
        split=_split_of(recorded=_recorded_split(path, arrays), listed=(entry or {}).get("split"), split=split,
                        default=default),
        provenance=provenance,
    )
    if entry is not None:
        _check_entry(path, entry, snap)
    return snap


def _read_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    # The named arrays the file holds; a missing one of ARRAYS is an error, a missing "split" is not.
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = set(names) & (set(ARRAYS) - set(z.files))
            if missing:
                raise InputError(f"snapshot file {str(path)!r} lacks the array(s) {sorted(missing)}")
            return {k: z[k] for k in names if k in z.files}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read snapshot {str(path)!r} ({type(exc).__name__}: {exc}); the file is "
                         "damaged") from None


def _recorded_split(path: Path, arrays: dict[str, np.ndarray]) -> str | None:
    # The split the file records, or None (files written before the "split" array).
    if "split" not in arrays:
        return None
    value = arrays["split"]
    if value.shape != () or value.dtype.kind != "U" or str(value) not in SPLITS:
        raise InputError(f"snapshot file {str(path)!r} records split {value.tolist()!r}, not one of {SPLITS}; the "
                         "file is damaged")
    return str(value)


def _split_of(*, recorded: str | None, listed: str | None, split: str | None, default: str) -> str:
    # The order of read_snapshot's docstring: test sticks, then split=, then the file, the manifest, default.
    for what, value in (("split", split), ("default", default)):
        if value is not None and value not in SPLITS:
            raise InputError(f"{what} must be one of {SPLITS}, got {value!r}")
    if "test" in (recorded, listed):
        return "test"
    return split or recorded or listed or default


def _manifest_entry(path: Path) -> dict | None:
    # The entry of `path` in the dataset.json of its folder (by file name), or None.
    if not (path.parent / MANIFEST).is_file():
        return None
    for entry in read_manifest(path.parent)["snapshots"]:
        if isinstance(entry, dict) and entry.get("file") == path.name:
            return entry
    return None


def _check_entry(path: Path, entry: dict, snap: Snapshot) -> None:
    # The file is the one its manifest entry describes: by digest, else (older manifests) by size.
    listed = entry.get("digest")
    have = {"digest": structure_digest(snap)} if listed is not None else {
        "n_atoms": len(snap.numbers), "grid_shape": list(snap.density.shape)}
    for key, value in have.items():
        if key in entry and entry[key] != value:
            raise InputError(
                f"snapshot file {str(path)!r} does not match its entry in {str(path.parent / MANIFEST)!r} ({key} "
                f"{value!r}, listed {entry[key]!r}): the file was replaced or the manifest is stale; restore the "
                "file or rebuild the data set"
            )


def read_dataset(directory: str | Path, *, split: str | None = None) -> list[Snapshot]:
    """Snapshots of one data-set directory (only ``split`` when given).

    Each snapshot's split is as :func:`read_snapshot` reads it: its file's record, else its entry's,
    and ``"test"`` if either says so.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    out = []
    for entry in manifest["snapshots"]:
        path = directory / entry["file"]
        if not path.is_file():
            raise InputError(f"snapshot file {str(path)!r} does not exist (listed in {str(directory / MANIFEST)!r})")
        if split is not None:  # skip the others before reading their densities
            have = _split_of(recorded=_recorded_split(path, _read_arrays(path, ("split",))),
                             listed=entry.get("split"), split=None, default="train")
            if have != split:
                continue
        out.append(_read(path, entry=entry, name=entry["name"], split=None, default="train"))
    return out


# -- the shipped test cells ----------------------------------------------------
def find_test_cells(root: str | Path) -> list[dict[str, str]]:
    """The test cells of the data sets in the folders of ``root`` (``root/*/dataset.json``).

    Returns
    -------
    list of dict
        ``{"cell": "DATASET/NAME", "digest": structure_digest}`` per structure of a snapshot whose
        split (as :func:`read_dataset` reads it) is ``"test"``, sorted by ``cell``.  A structure in
        several data sets (a cell relabelled under another protocol, ``bigdens data relabel``) is
        listed once, under its original (the cell it was relabelled from).
    """
    from types import SimpleNamespace

    cells = []
    for manifest in sorted(Path(root).glob(f"*/{MANIFEST}")):
        directory = manifest.parent
        for entry in read_manifest(directory)["snapshots"]:
            path = directory / entry["file"]
            arrays = _read_arrays(path, ("cell", "positions", "numbers", "split", "provenance"))
            split = _split_of(recorded=_recorded_split(path, arrays), listed=entry.get("split"), split=None,
                              default="train")
            if split == "test":
                relabelled = "relabelled_from" in (json.loads(str(arrays["provenance"])).get("thermalization") or {})
                cells.append((relabelled, {"cell": f"{directory.name}/{entry['name']}",
                                           "digest": structure_digest(SimpleNamespace(**arrays))}))
    first: dict[str, dict[str, str]] = {}
    for _, c in sorted(cells, key=lambda rc: (rc[0], rc[1]["cell"])):  # originals before relabelled copies
        first.setdefault(c["digest"], c)
    return sorted(first.values(), key=lambda c: c["cell"])


def write_test_cells(root: str | Path, path: str | Path = TEST_CELLS) -> Path:
    """Write the registry of the test cells of the data sets under ``root`` (:func:`find_test_cells`).

    Run it after adding test snapshots to the shipped data sets, from the repository root::

        .venv/bin/python -c "from bigdens import data; data.write_test_cells('datasets')"

    (``tests/test_data.py`` fails while ``bigdens/test_cells.json`` is out of date.)
    """
    doc = {
        "format": TEST_CELLS_FORMAT,
        "format_version": 1,
        "description": "structure digests (bigdens.data.structure_digest) of the test-split snapshots shipped "
                       "in datasets/; written by bigdens.data.write_test_cells('datasets')",
        "cells": find_test_cells(root),
    }
    path = Path(path)
    write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    return path


def shipped_test_cells(path: str | Path = TEST_CELLS) -> dict[str, str]:
    """The test cells shipped in ``datasets/``: structure digest -> ``"DATASET/NAME"``.

    Read from the registry ``bigdens/test_cells.json`` (:func:`write_test_cells`), so that it
    holds where the data sets are not installed.

    Raises
    ------
    SetupError
        If the registry is missing or damaged: the installation is broken.
    """
    return dict(_test_cells(str(path)))


@functools.lru_cache(maxsize=None)
def _test_cells(path: str) -> dict[str, str]:
    # The registry, read once (shipped_test_cells hands out copies).
    from .errors import SetupError

    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != TEST_CELLS_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, not {TEST_CELLS_FORMAT!r}")
        return {c["digest"]: c["cell"] for c in doc["cells"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SetupError(f"cannot read the registry of the shipped test cells {str(path)!r} ({exc}); this "
                         "bigdens installation is broken: reinstall it") from None


def refuse_test_cells(snapshots, *, todo: str) -> None:
    """Refuse test cells where data must never be test data (calibration, training).

    A snapshot is a test cell if its split is ``"test"``, or if its structure is that of a test
    cell shipped in ``datasets/`` (:func:`shipped_test_cells`), whatever its name, folder or
    recorded split: a renamed copy, or a DFT of the same configuration at other settings.

    Parameters
    ----------
    snapshots
        The snapshots to check (:class:`Snapshot`).
    todo
        What to do instead, ending the message (e.g. ``"calibrate on validation snapshots"``).

    Raises
    ------
    InputError
        In one line: which snapshots, why each is a test cell, and ``todo``.
    """
    test = sorted(s.name for s in snapshots if s.split == "test")
    if test:
        raise InputError(f"{_plural(test, 'snapshot')} {', '.join(test)} {'is' if len(test) == 1 else 'are'} in the "
                         f"test split: {todo}")
    shipped = shipped_test_cells()
    copies = [(s.name, shipped[d]) for s in snapshots if (d := structure_digest(s)) in shipped]
    if copies:
        names = ", ".join(f"{name} (= {cell})" for name, cell in copies)
        copy = "is a copy" if len(copies) == 1 else "are copies"
        raise InputError(f"{_plural(copies, 'snapshot')} {names} {copy} of a test cell shipped in datasets/ (the same "
                         f"structure): {todo}")


def _plural(items, word: str) -> str:
    return word if len(items) == 1 else word + "s"


def from_density_file(dens: "DensityFile", *, split: str = "train", name: str | None = None,
                      provenance: dict | None = None) -> Snapshot:
    """A density read by :mod:`bigdens.io` as a snapshot (float32 density, e/Å³; lengths Å).

    Parameters
    ----------
    dens
        What a reader returned (:class:`bigdens.io.DensityFile`).
    split
        The snapshot's split.
    name
        The snapshot's name; default: the source file's name.
    provenance
        The snapshot's provenance; default: the file's (``dens.provenance``).
    """
    name = name or Path(dens.provenance.get("source_file", "snapshot")).name
    return Snapshot(name=name, cell=dens.cell, positions=dens.positions, numbers=dens.numbers,
                    density=np.asarray(dens.density, dtype=np.float32), split=split,
                    provenance=dict(dens.provenance) if provenance is None else provenance)


def _read_raw(path: Path, *, split: str) -> Snapshot:
    # A single density file in a foreign format.
    from .io import read_density_file

    return from_density_file(read_density_file(path), split=split)


def load(
    paths: "list[str | Path] | str | Path",
    *,
    split: str | None = None,
    allow_mixed_protocols: bool = False,
) -> list[Snapshot]:
    """Load snapshots from data-set directories and raw density files.

    Parameters
    ----------
    paths
        Data-set directories (holding ``dataset.json``) and/or single files:
        Gaussian cube, VASP CHGCAR, GPAW ``.gpw`` or XSF.
    split
        Keep only snapshots of this split.  A snapshot ``.npz`` has the split
        it records (:func:`read_snapshot`); raw files, and ``.npz`` files that
        record none, have split ``"train"`` unless ``split`` is given, in which
        case they get that split.  A test cell never gets another.
    allow_mixed_protocols
        Accept snapshots made with different DFT protocols in one call.

    Returns
    -------
    list of Snapshot
        In the order of ``paths``, then of each manifest.

    Raises
    ------
    InputError
        If a path is missing or unreadable, a density holds NaN, or the
        snapshots come from several protocols (unless allowed).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if split is not None and split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS} or None, got {split!r}")
    snapshots: list[Snapshot] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            snapshots.extend(read_dataset(p, split=split))
        elif p.is_file():
            if p.suffix == ".npz":
                snap = read_snapshot(p, default=split or "train")
                if split is None or snap.split == split:
                    snapshots.append(snap)
            else:
                snapshots.append(_read_raw(p, split=split or "train"))
        else:
            raise InputError(f"{str(p)!r} does not exist (expected a data-set directory or a density file)")
    protocols = sorted({str(s.protocol) for s in snapshots})
    if len(protocols) > 1 and not allow_mixed_protocols:
        raise InputError(
            f"the snapshots come from {len(protocols)} different DFT protocols ({', '.join(protocols)}); "
            "densities of different settings do not mix well: load one protocol at a time, or pass "
            "allow_mixed_protocols=True (--allow-mixed-protocols) if you mean it"
        )
    return snapshots
