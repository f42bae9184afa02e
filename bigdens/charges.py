"""Per-atom charges with error bars: Voronoi cells of the grid, integrated per Monte Carlo sample.

Assignment
    Every grid point belongs to its nearest atom under the minimum-image
    convention (a Voronoi partition of the periodic cell).  Ties, equal float64
    distances, go to the atom with the smaller index.  :func:`assign_block`
    finds the nearest atom of every point of a block among the block's halo
    atoms (:func:`bigdens.blocks.block_halo`), widening the halo until every
    point's nearest atom lies within it: a point whose nearest halo atom is at
    most the halo radius away has its true nearest atom in the halo.

What a block accumulates (during ``bigdens predict``, nothing per sample is stored on the grid)
    For each atom ``a`` owning points of block ``b`` (``K`` atoms, the block's
    "owners"), in e/Å³ summed over points (multiply by the volume element
    ``dv``, Å³, for electrons):

    * ``M[a] = Σ_p ρ̄(p)``: the sum of the mean density as stored (float32
      values, summed in float64);
    * ``D[a, s] = Σ_p w(p) · (ρ_s(p) − ρ̄(p))`` for each of the S Monte Carlo
      samples, with ``w(p)`` the square root of the model's calibration factor
      of the epistemic variance at ``p`` (``Scaling.variance_factor``), so that
      the per-sample fields ``ρ̄ + w·(ρ_s − ρ̄)`` have exactly the stored
      epistemic variance ``density_std_epistemic²`` at every point
      (:meth:`bigdens.bnn.DensityModel.predict_grouped`).

    They are written as one small file per block beside its ledger entry
    (:func:`bigdens.store.write_block_charges`), so that a resumed run sums
    exactly the same numbers.

The charges of a complete run (:func:`combine`)
    ``charge[a] = dv · Σ_b scale_b · M_b[a]``, electrons, with ``scale_b`` the
    block's ``--renormalize`` factor (1 without it): the charges sum to the
    integral of the stored density.  The samples of a block are shared by all
    its points (drawn from ``(seed, block)``), so the per-sample charge
    ``Q[a, s] = charge[a] + dv · Σ_b D_b[a, s]`` is the charge of atom ``a`` in
    the per-sample field ``s`` assembled from all blocks, and
    ``charge_std[a] = std_s Q[a, s]`` (divisor S, as for the stored epistemic
    variance).  Correlations between the points of a block, and so within an
    atom's cell and between neighbouring atoms, are kept; samples of different
    blocks are independent draws paired by their index ``s``.

    ``charge_std`` is the epistemic (model) uncertainty only.  The aleatoric
    σ is a point-wise noise the model predicts without any spatial
    correlation: integrated over the thousands of points of a cell as
    independent noise it would shrink as 1/√(points) and depend on the grid,
    so it is left out, as is the grid's integration error
    (:data:`bigdens.domain.SPACING_ERROR`).  The ``--renormalize`` factor
    scales ``charge`` but not ``charge_std``, as it scales ``density`` but not
    ``density_std``.  Measured against DFT (Al with a vacancy,
    benchmarks/results/charges_vacancy.json) the errors of the charges exceed
    ``charge_std``: it marks where the model is unsure (the vacancy's
    neighbours), it is not a full error bar.

Export: :func:`read` reads them back from a store, :func:`write_csv` and
:func:`write_extxyz` write them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ._charge_kernels import accumulate  # noqa: F401  (re-exported: the model accumulates D while predicting)
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .blocks import Block
    from .celllist import CellList
    from .grid import Grid

#: Attribute ``charges.method`` of a store with charges.
METHOD = "voronoi"
#: The first halo radius of the assignment, in units of the mean interatomic distance ``(V/N)^(1/3)``.
START_RADIUS = 1.5


# -- the nearest atom ----------------------------------------------------------------------

#: Edge, in grid points, of the sub-boxes of a block that :func:`_nearest_in_box` screens candidates for.
SUB_BOX = 4


@njit(cache=True, boundscheck=False)
def _nearest_in_box(cell, shape, start, stop, positions, indices, sub):
    # Nearest image to every grid point of the box [start, stop), points in C order.  Per sub-box of
    # sub³ points: the nearest image to its centre c (distance dc) and the half-diagonal R; an image
    # nearest to (or tied with the nearest of) a point of the sub-box lies within dc + 2R of c, so
    # only those images are compared for its points.  Ties: the smaller atom index.
    n0, n1, n2 = stop[0] - start[0], stop[1] - start[1], stop[2] - start[2]
    m = positions.shape[0]
    which = np.empty(n0 * n1 * n2, dtype=np.int64)
    best2 = np.empty(n0 * n1 * n2, dtype=np.float64)
    cand = np.empty(m, dtype=np.int64)
    p = np.empty(3)
    c = np.empty(3)
    for a0 in range(0, n0, sub):
        for a1 in range(0, n1, sub):
            for a2 in range(0, n2, sub):
                b0, b1, b2 = min(a0 + sub, n0), min(a1 + sub, n1), min(a2 + sub, n2)
                f0 = (start[0] + 0.5 * (a0 + b0 - 1)) / shape[0]
                f1 = (start[1] + 0.5 * (a1 + b1 - 1)) / shape[1]
                f2 = (start[2] + 0.5 * (a2 + b2 - 1)) / shape[2]
                for d in range(3):
                    c[d] = f0 * cell[0, d] + f1 * cell[1, d] + f2 * cell[2, d]
                r2 = 0.0  # half-diagonal²: the farthest corner point from c
                for e0 in (a0, b0 - 1):
                    for e1 in (a1, b1 - 1):
                        for e2 in (a2, b2 - 1):
                            g0 = (start[0] + e0) / shape[0]
                            g1 = (start[1] + e1) / shape[1]
                            g2 = (start[2] + e2) / shape[2]
                            q = 0.0
                            for d in range(3):
                                t = g0 * cell[0, d] + g1 * cell[1, d] + g2 * cell[2, d] - c[d]
                                q += t * t
                            r2 = max(r2, q)
                dc2 = np.inf
                for j in range(m):
                    q = 0.0
                    for d in range(3):
                        t = positions[j, d] - c[d]
                        q += t * t
                    dc2 = min(dc2, q)
                reach = np.sqrt(dc2) + 2.0 * np.sqrt(r2) + 1e-9
                reach2 = reach * reach
                nc = 0
                for j in range(m):
                    q = 0.0
                    for d in range(3):
                        t = positions[j, d] - c[d]
                        q += t * t
                    if q <= reach2:
                        cand[nc] = j
                        nc += 1
                for i0 in range(a0, b0):
                    g0 = (start[0] + i0) / shape[0]
                    for i1 in range(a1, b1):
                        g1 = (start[1] + i1) / shape[1]
                        for i2 in range(a2, b2):
                            g2 = (start[2] + i2) / shape[2]
                            for d in range(3):
                                p[d] = g0 * cell[0, d] + g1 * cell[1, d] + g2 * cell[2, d]
                            b = np.inf
                            w = -1
                            for u in range(nc):
                                j = cand[u]
                                q = 0.0
                                for d in range(3):
                                    t = positions[j, d] - p[d]
                                    q += t * t
                                if q < b or (q == b and indices[j] < indices[w]):
                                    b = q
                                    w = j
                            k = (i0 * n1 + i1) * n2 + i2
                            which[k] = w
                            best2[k] = b
    return which, best2


def nearest_in_block(grid: "Grid", block: "Block", positions: np.ndarray,
                     indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest of ``positions`` to each point of ``block`` (ties: the smaller ``indices``).

    Parameters
    ----------
    grid, block
        The grid and the block (points ``(i/n1)·a1 + (j/n2)·a2 + (k/n3)·a3``).
    positions : ndarray, shape (m, 3), float64, Å
        Atom images (m ≥ 1).
    indices : ndarray, shape (m,), int64
        Atom index of each image (images of one atom share it).

    Returns
    -------
    which : ndarray, shape (block.n_points,), int64
        Index into ``positions`` of each point's nearest image, points in C order.
    d2 : ndarray, shape (block.n_points,), float64
        Its squared distance, Å².
    """
    return _nearest_in_box(np.ascontiguousarray(grid.cell, dtype=np.float64), np.asarray(grid.shape, np.int64),
                           np.asarray(block.start, np.int64), np.asarray(block.stop, np.int64),
                           np.ascontiguousarray(positions, dtype=np.float64),
                           np.ascontiguousarray(indices, dtype=np.int64), SUB_BOX)


def start_radius(cell: np.ndarray, n_atoms: int) -> float:
    """First halo radius (Å) of :func:`assign_block`: :data:`START_RADIUS` mean interatomic distances."""
    return START_RADIUS * (abs(np.linalg.det(cell)) / max(1, n_atoms)) ** (1 / 3)


def assign_block(cell_list: "CellList", numbers: np.ndarray, grid: "Grid", block: "Block",
                 radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Voronoi owner (nearest atom, minimum image) of every point of ``block``.

    Parameters
    ----------
    cell_list
        Atom source: the cell list of the whole structure, or a worker's
        :class:`~bigdens.atomtiles.TiledAtoms`.
    numbers : ndarray, shape (n_atoms,), or None
        Atomic numbers (for the halo; None with a ``TiledAtoms``).
    grid, block
        The grid and the block.
    radius
        First halo radius, Å (default :func:`start_radius`); doubled until
        every point's nearest atom lies within it.

    Returns
    -------
    owners : ndarray, shape (K,), int64
        The atoms owning points of the block, ascending.
    labels : ndarray, shape (block.n_points,), int32
        Index into ``owners`` of each point's atom, points in C order.
    """
    from .blocks import block_halo

    cell = np.asarray(grid.cell, dtype=np.float64)
    r = start_radius(cell, cell_list.n_atoms) if radius is None else float(radius)
    # Beyond this every point has an atom image within reach (the longest cell diagonal bounds it).
    reach = float(np.sum(np.linalg.norm(cell, axis=1)))
    while True:
        halo = block_halo(cell_list, numbers, grid, block, r)
        if len(halo.indices):
            which, d2 = nearest_in_block(grid, block, halo.positions, halo.indices)
            if r >= reach or float(d2.max()) <= r * r:
                break
        elif r >= reach:  # pragma: no cover  (a structure has atoms)
            raise InputError("no atom found for the Voronoi assignment")
        r *= 2.0
    # Owners: the halo's atoms that own a point, ascending; labels index them (no sort over the points).
    atoms, image_atom = np.unique(halo.indices, return_inverse=True)
    labels = image_atom.reshape(-1)[which]
    used = np.bincount(labels, minlength=len(atoms)) > 0
    new = np.cumsum(used) - 1
    owners = atoms[used]
    labels = new[labels]
    return owners.astype(np.int64), labels.astype(np.int32).reshape(-1)


# -- per block -------------------------------------------------------------------------------

def block_sums(mean: np.ndarray, labels: np.ndarray, n_owners: int) -> np.ndarray:
    """``M``: the mean density summed over each owner's points, float64 (K,), e/Å³ (times dv: electrons)."""
    return np.bincount(labels, weights=np.asarray(mean, dtype=np.float64).reshape(-1), minlength=n_owners)


# -- over the blocks ---------------------------------------------------------------------------

def block_parts(path: str | Path, ledger: dict, blocks, *, offset: int = 0):
    """The per-block parts :func:`combine` takes, read from the store at ``path`` in ``blocks``' order.

    Each file is checked against its ledger entry (:func:`bigdens.store.read_block_charges`); the
    part's scale is the entry's ``--renormalize`` factor (1 without it).  ``offset``: the first unit of
    the frame in a trajectory store (``frame · n_blocks``; the ledger is keyed by unit).
    """
    from . import store

    for b in blocks:
        unit = offset + b.index
        entry = ledger[unit]
        owners, m, d = store.read_block_charges(path, unit, entry)
        yield owners, m, d, float(entry.scale)


@dataclass
class Charges:
    """Per-atom charges of a structure.

    Attributes
    ----------
    charge : ndarray, shape (n_atoms,), float64
        Electrons in each atom's Voronoi cell, e (integral of the mean density).
    charge_std : ndarray, shape (n_atoms,), float64
        Epistemic standard deviation of ``charge``, e (see the module docstring).
    samples : ndarray, shape (n_atoms, S), float64, or None
        Per-sample charges ``Q[a, s]``, e (kept by :func:`combine` on request).
    """

    charge: np.ndarray
    charge_std: np.ndarray
    samples: np.ndarray | None = None


#: Atoms per pass of the σ in :func:`combine` (temporaries of STD_ROWS × S float64).
STD_ROWS = 1 << 16


def combine(parts, *, n_atoms: int, samples: int, dv: float, keep_samples: bool = False) -> Charges:
    """Sum per-block parts into the charges of the structure (see the module docstring).

    Parameters
    ----------
    parts
        Iterable of ``(owners (K,), M (K,), D (K, S), scale)`` per block, in
        block order (the order fixes the float64 rounding).
    n_atoms, samples
        Atoms of the structure and S.
    dv
        Volume element, Å³.
    keep_samples
        Also return the per-sample charges (n_atoms × S float64).

    Memory: ``n_atoms · (S + 2)`` float64 (the σ is computed in passes of
    :data:`STD_ROWS` atoms, so no second ``n_atoms × S`` temporary).
    """
    total = np.zeros(n_atoms)
    dev = np.zeros((n_atoms, samples))
    for owners, m, d, scale in parts:
        np.add.at(total, owners, m * scale)
        np.add.at(dev, owners, d)
    charge = total * dv
    dev *= dv
    std = np.empty(n_atoms)
    for s in range(0, n_atoms, STD_ROWS):
        rows = dev[s : s + STD_ROWS]
        std[s : s + STD_ROWS] = np.sqrt(np.mean((rows - rows.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return Charges(charge=charge, charge_std=std, samples=charge[:, None] + dev if keep_samples else None)


def from_ledger(path: str | Path, ledger: dict, blocks, *, n_atoms: int, samples: int, dv: float,
                n_frames: int | None = None) -> list[Charges]:
    """The charges of every frame (one for a single structure) summed from the store's per-block files.

    Reads each block's charges file (checked against its ledger entry) in block order, so that a resumed
    run, and :func:`check_store`, get bit for bit the charges of an uninterrupted one.  ``ledger`` is keyed by
    work unit (``frame · len(blocks) + block`` in a trajectory store).

    Raises
    ------
    InputError
        If a charges file is missing or differs from its ledger entry.
    """
    from . import store

    units = store.WorkUnits(len(blocks), n_frames)
    return [combine(block_parts(path, ledger, blocks, offset=units.first(None if n_frames is None else k)),
                    n_atoms=n_atoms, samples=samples, dv=dv) for k in range(n_frames or 1)]


def store_attribute(results: list[Charges], *, trajectory: bool) -> dict:
    """The store's ``charges`` attribute for ``results`` (:func:`from_ledger`): per frame in a trajectory."""
    n_el = [float(r.charge.sum()) for r in results]
    top = [float(r.charge_std.max()) if len(r.charge_std) else None for r in results]
    return {"method": METHOD, "units": "electron", "n_electrons": n_el if trajectory else n_el[0],
            "uncertainty": "epistemic: standard deviation over the Monte Carlo samples (aleatoric not included)",
            "max_charge_std": top if trajectory else top[0]}


def check_store(path: str | Path, *, repair: bool = False) -> list[tuple[str, str]]:
    """Whether a complete store's ``charge``, ``charge_std`` and ``charges`` attribute are what its per-block
    charges files sum to (:func:`from_ledger`); with ``repair``, write them again from the files.

    A store without charges, an incomplete one and one whose blocks fail their ledger check
    (:func:`bigdens.store.verify` reports those) give no problem here.

    Returns
    -------
    list of (str, str)
        (variable or attribute, reason) for each difference found (before any repair).
    """
    import zarr

    from . import store

    attrs = store.read_attrs(path)
    if not attrs or not attrs.get("complete") or not isinstance(attrs.get("charges"), dict):
        return []
    ledger = store.read_ledger(path)
    blocks = store.blocks_of(attrs)
    frames = store.n_frames(attrs)
    if len(ledger) != len(blocks) * (frames or 1) or any(e.charges is None for e in ledger.values()):
        return []
    try:
        results = from_ledger(path, ledger, blocks, n_atoms=int(attrs["n_atoms"]), samples=int(attrs["mc_samples"]),
                              dv=float(attrs["volume_element"]), n_frames=frames)
    except InputError:
        return []  # a charges file that fails its ledger entry: verify names the block
    want = {"charge": np.stack([r.charge for r in results]), "charge_std": np.stack([r.charge_std for r in results])}
    if frames is None:
        want = {k: v[0] for k, v in want.items()}
    problems = []
    try:
        with store._quiet():
            root = zarr.open_group(str(path), mode="r", use_consolidated=False)
            for name, values in want.items():
                have = np.asarray(root[name][...], dtype=np.float64)
                if have.shape != values.shape or not np.array_equal(have, values):
                    problems.append((name, "differs from the sum of the blocks' charges files (edited)"))
    except Exception as exc:  # noqa: BLE001  (zarr raises many types on damaged arrays)
        problems.append(("charge", f"unreadable ({type(exc).__name__})"))
    attribute = store_attribute(results, trajectory=frames is not None)
    recorded = attrs.get("charges") or {}
    for key in ("n_electrons", "max_charge_std"):
        if json.dumps(recorded.get(key)) != json.dumps(attribute[key]):
            problems.append((f"charges.{key}", f"is {recorded.get(key)!r}, the charges files give {attribute[key]!r}"))
    if repair and problems:
        store.write_charges(path, want["charge"], want["charge_std"])
        store.update_attrs(path, charges=attribute)
    return problems


# -- reading and export ------------------------------------------------------------------------

@dataclass
class StoreCharges:
    """The charges of a store with its atoms (what ``bigdens charges`` shows and exports)."""

    charge: np.ndarray
    charge_std: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    valence: np.ndarray | None
    attrs: dict
    #: The frame (position on a trajectory store's frame axis), None for a single structure's store.
    frame: int | None = None

    @property
    def net(self) -> np.ndarray | None:
        """Net charge per atom, valence electrons − ``charge``, e (None: a species without a known valence)."""
        return None if self.valence is None else self.valence - self.charge

    def summary(self, path) -> str:
        from ase.data import chemical_symbols

        n_pred = float(self.charge.sum())
        total = self.attrs.get("charges", {}).get("n_electrons", float("nan"))
        which = ""
        if self.frame is not None:
            total = total[self.frame]
            index = (self.attrs.get("frames") or {}).get("index") or []
            which = f" frame {self.frame}" + (f" (file frame {index[self.frame]})" if index else "") + ","
        lines = [f"charges: {path}:{which} {len(self.charge)} atoms, Voronoi cells (nearest atom), "
                 f"{self.attrs.get('mc_samples', '?')} Monte Carlo samples; σ is epistemic only",
                 f"sum of charges {n_pred:.6f} e (the stored density integrates to {total:.6f} e)"]
        for z in np.unique(self.numbers):
            sel = self.numbers == z
            q, s = self.charge[sel], self.charge_std[sel]
            line = (f"  {chemical_symbols[int(z)]}: {int(sel.sum())} atoms, charge {q.mean():.4f} e (spread over atoms "
                    f"{q.std():.4f}, range {q.min():.4f}–{q.max():.4f}), σ mean {s.mean():.4f} max {s.max():.4f} e")
            if self.valence is not None:
                line += f", net charge {float(self.net[sel].mean()):+.4f} e"
            lines.append(line)
        return "\n".join(lines)


def read(path: str | Path, *, frame: int | None = None) -> StoreCharges:
    """The charges of the store at ``path`` (of ``frame``, its position on the frame axis, in a trajectory store).

    Raises
    ------
    InputError
        If ``path`` is not a bigdens store, the store is incomplete, or it
        was made before bigdens wrote charges (rerun ``bigdens predict``).
    SetupError
        A trajectory store without ``frame``, a frame out of range, or a frame of a single structure's store.
    """
    import zarr

    from . import store
    from .chemistry import HGH_VALENCE

    attrs = store.require_attrs(path)
    frame = store.check_frame(path, attrs, frame)
    sel = () if frame is None else (frame,)
    if not attrs.get("complete"):
        raise InputError(f"{str(path)!r} is incomplete: its charges are written when the last block is done; "
                         "finish it with `bigdens predict ... --resume`")
    if not isinstance(attrs.get("charges"), dict) or not (Path(path) / "charge" / "zarr.json").is_file():
        raise InputError(f"{str(path)!r} was made before bigdens computed per-atom charges; rerun `bigdens predict "
                         "... --overwrite` to get them")
    try:
        with store._quiet():
            root = zarr.open_group(str(path), mode="r", use_consolidated=False)
            charge = np.asarray(root["charge"][sel], dtype=np.float64)
            std = np.asarray(root["charge_std"][sel], dtype=np.float64)
            pos = np.asarray(root["positions"][sel], dtype=np.float64)
            num = np.asarray(root["numbers"][:], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001  (zarr raises many types on damaged arrays)
        raise InputError(f"{str(path)!r} is damaged: its charges or atoms cannot be read ({type(exc).__name__}); "
                         "predict it again with `bigdens predict ... --overwrite`") from None
    if not (len(charge) == len(std) == len(num) == len(pos)):
        raise InputError(f"{str(path)!r} is damaged: charge, charge_std and the atoms differ in length; predict "
                         "it again with `bigdens predict ... --overwrite`")
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[int(z)] for z in num]
    valence = (np.array([HGH_VALENCE[s] for s in symbols], dtype=np.float64)
               if all(s in HGH_VALENCE for s in symbols) else None)
    return StoreCharges(charge=charge, charge_std=std, positions=pos, numbers=num,
                        cell=np.asarray(attrs["cell"], dtype=np.float64), valence=valence, attrs=attrs, frame=frame)


def write_csv(path: str | Path, c: StoreCharges) -> None:
    """CSV: index, symbol, x, y, z (Å), charge_e, charge_std_e [, net_charge_e] (written atomically)."""
    import csv
    import io

    from ase.data import chemical_symbols

    from ._files import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "symbol", "x", "y", "z", "charge_e", "charge_std_e"]
               + ([] if c.valence is None else ["net_charge_e"]))
    net = c.net
    for i, (z, p, q, s) in enumerate(zip(c.numbers, c.positions, c.charge, c.charge_std)):
        row = [i, chemical_symbols[int(z)], *(f"{v:.10g}" for v in p), f"{q:.10g}", f"{s:.6g}"]
        if net is not None:
            row.append(f"{net[i]:.10g}")
        w.writerow(row)
    write_text(path, buf.getvalue())


def write_extxyz(path: str | Path, c: StoreCharges) -> None:
    """extxyz with per-atom arrays ``charge_e``, ``charge_std_e`` [, ``net_charge_e``] (e; written atomically).

    The names are the CSV's columns; plain ``charge`` would be read back by ASE as a calculator's
    ``charges`` (a net charge there), which these electron counts are not.
    """
    import io

    from ase import Atoms
    from ase.io import write

    from ._files import write_text

    atoms = Atoms(numbers=c.numbers, positions=c.positions, cell=c.cell, pbc=True)
    atoms.new_array("charge_e", c.charge)
    atoms.new_array("charge_std_e", c.charge_std)
    if c.valence is not None:
        atoms.new_array("net_charge_e", c.net)
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    write_text(path, buf.getvalue())


__all__ = ["METHOD", "Charges", "StoreCharges", "accumulate", "assign_block", "block_parts", "block_sums",
           "combine", "nearest_in_block", "read", "start_radius", "write_csv", "write_extxyz"]
