"""Quantum ESPRESSO's charge-density file: the starting density of ``pw.x`` with ``startingpot='file'``.

What ``pw.x`` reads
-------------------
With ``startingpot = 'file'`` (namelist ``&ELECTRONS``), ``pw.x`` reads
``OUTDIR/PREFIX.save/charge-density.dat`` (``potinit`` → ``read_scf`` → ``io_base.read_rhog``)
and nothing else of that folder.  The file (non-HDF5 builds, Fortran unformatted sequential, native
byte order, 4-byte record markers) has four records:

1. ``gamma_only`` (logical, 4 bytes), ``ngm_g`` (int32), ``nspin`` (int32);
2. the reciprocal vectors ``b1, b2, b3`` (9 float64, Bohr⁻¹, 2π included);
3. the Miller indices of the ``ngm_g`` G-vectors (int32, (ngm_g, 3) in C order);
4. per spin, ``ρ(G)`` (ngm_g complex128), ``ρ(G) = (1/N) Σ_r ρ(r) e^{−iG·r}`` with ρ(r) in e/Bohr³,
   so ``ρ(0)·Ω = electrons``.

``read_rhog`` does **not** look the Miller indices up: it takes the values in the order of
``pw.x``'s own global G-vector list (``ig_l2g``), so the file must list exactly the G-vectors of the
run that reads it, in its order.  That order (``ggen`` in ``Modules/recvec_subs.f90``) is every
``(i, j, k)`` with ``|G|² ≤ ecutrho`` in loop order (i, then j, then k, each ascending), sorted by
``|G|²`` in units of ``(2π/alat)²``, ties (equal within 1e-8) kept in loop order.  It depends on the
cell, ``ecutrho`` and ``alat``; :func:`qe_miller_indices` makes it, and the tests hold it against the
files of the real ``pw.x`` (Debian's 6.7).  The list is the same in serial and parallel runs (the
global order is machine-independent).  A ``K_POINTS gamma`` run keeps half the sphere: it finds
``gamma_only`` false in the file and converts by the Miller indices itself.

Units: the writer takes Å and e/Å³ (DESIGN §1 grid) and converts here, at the file's edge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..errors import InputError

#: The only file name ``pw.x`` reads a starting density from (inside ``OUTDIR/PREFIX.save/``).
FILE_NAME = "charge-density.dat"
#: ``ggen``'s tolerance for equal |G|² (units of (2π/alat)²) and for G = 0.
EPS8 = 1e-8
#: Largest grid the writer holds in memory (points): 512³ complex128 is 2 GiB.
MAX_POINTS = 512**3


def qe_miller_indices(cell: np.ndarray, ecutrho: float, *, alat: float | None = None) -> np.ndarray:
    """The G-vectors of a ``pw.x`` run's dense grid, in its global order.

    Parameters
    ----------
    cell : ndarray, shape (3, 3)
        Lattice vectors (rows), Å.
    ecutrho : float
        The run's ``ecutrho``, Ry (``pw.x``'s default: 4 · ``ecutwfc``).
    alat : float, optional
        The run's lattice parameter, Å: ``celldm(1)`` or ``A``; with ``ibrav = 0`` and
        ``CELL_PARAMETERS angstrom`` (as ASE writes), the length of the first lattice vector (default).
        It sets only which |G|² count as equal (within 1e-8 of (2π/alat)²).

    Returns
    -------
    ndarray, shape (ngm_g, 3), int32
        Miller indices (i, j, k) of ``G = i·b1 + j·b2 + k·b3``, in ``pw.x``'s order.
    """
    from ase.units import Bohr

    a = np.asarray(cell, dtype=np.float64) / Bohr  # Bohr
    if a.shape != (3, 3) or abs(np.linalg.det(a)) < 1e-12:
        raise InputError("the cell must be three independent lattice vectors")
    if not ecutrho > 0:
        raise InputError(f"ecutrho must be positive (Ry), got {ecutrho!r}")
    alat_bohr = (float(np.linalg.norm(a[0])) if alat is None else float(alat) / Bohr)
    if not alat_bohr > 0:
        raise InputError(f"alat must be positive (Å), got {alat!r}")
    tpiba = 2 * np.pi / alat_bohr
    bg = 2 * np.pi * np.linalg.inv(a).T / tpiba  # rows b_i in units of 2π/alat
    gcutm = float(ecutrho) / tpiba**2
    # |m_i| = |G·a_i|/2π ≤ |G|·|a_i|/2π: a box that holds the sphere.
    n = [int(np.sqrt(gcutm) * np.linalg.norm(a[i]) / alat_bohr) + 1 for i in range(3)]
    i, j, k = np.meshgrid(*(np.arange(-m, m + 1) for m in n), indexing="ij")
    mill = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    g2 = ((mill @ bg) ** 2).sum(axis=1)
    keep = g2 <= gcutm
    mill, g2 = mill[keep], g2[keep]
    g2[g2 <= EPS8] = 0.0
    order = np.argsort(g2, kind="stable")
    mill, g2 = mill[order], g2[order]
    # Values equal within EPS8 but in a different float order: back to loop order inside each run.
    loop = order
    starts = np.flatnonzero(np.r_[True, np.diff(g2) > EPS8])
    ends = np.r_[starts[1:], len(g2)]
    for s, e in zip(starts, ends):
        if e - s > 1:
            sub = np.argsort(loop[s:e], kind="stable")
            mill[s:e] = mill[s:e][sub]
            loop[s:e] = loop[s:e][sub]
    return mill.astype(np.int32)


def _record(f, array: np.ndarray) -> None:
    data = np.ascontiguousarray(array).tobytes()
    marker = np.int32(len(data)).tobytes()
    f.write(marker)
    f.write(data)
    f.write(marker)


def _gather(data, shape) -> np.ndarray:
    # The whole field as float64: an ndarray as it is, a forward-only slab source (axis 0) slab by slab.
    if isinstance(data, np.ndarray) or getattr(data, "axis", 0) == 0:
        out = np.empty(shape, dtype=np.float64)
        for i in range(shape[0]):
            out[i] = data[i]
        return out
    raise InputError("the QE writer reads the field along its first axis")


def write_qe(path: str | Path, atoms, data_e_per_A3, *, ecutrho: float | None = None, alat: float | None = None,
             n_electrons: float | None = None, comment: str = "") -> None:
    """Write a density as ``pw.x``'s ``charge-density.dat`` (a starting density for ``startingpot='file'``).

    Parameters
    ----------
    path
        Output file, normally ``OUTDIR/PREFIX.save/charge-density.dat`` of the run that will read it
        (written atomically).
    atoms
        The structure (Å); its cell must be the ``pw.x`` run's.
    data_e_per_A3
        Density, shape (n1, n2, n3), e/Å³, DESIGN §1 grid; read whole (at most :data:`MAX_POINTS`).
        Frequencies above the grid's Nyquist limit are written as 0.
    ecutrho
        The run's ``ecutrho``, Ry (required: it fixes the G-vectors the file must list).
    alat
        As :func:`qe_miller_indices`.
    n_electrons
        Rescale so that the density integrates to this many electrons (the valence count of the
        run's pseudopotentials, if it differs from the density's); default: as given.
    comment
        Ignored (the format has no comment); accepted as every writer's.

    Raises
    ------
    InputError
        No ``ecutrho``, a field that is not 3-D or too large, holds no charge or non-finite values,
        or a grid too coarse for half of the run's G-sphere.
    """
    from ase.units import Bohr

    if ecutrho is None:
        raise InputError("a QE charge-density file needs the pw.x run's ecutrho (Ry, 4 x ecutwfc by default): "
                         "give --ecutrho")
    shape = tuple(int(n) for n in data_e_per_A3.shape)
    if len(shape) != 3:
        raise InputError(f"the density must be a 3-D grid, got shape {shape}")
    if int(np.prod(shape)) > MAX_POINTS:
        raise InputError(f"a {'x'.join(map(str, shape))} grid is more than a QE starting density needs "
                         f"(at most {MAX_POINTS} points here); predict on pw.x's FFT grid or a 0.1-0.2 Å one")
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    mill = qe_miller_indices(cell, ecutrho, alat=alat)
    rho = _gather(data_e_per_A3, shape) * Bohr**3  # e/Bohr³
    if not np.isfinite(rho).all():
        raise InputError("the density holds NaN or infinite values")
    spectrum = np.fft.fftn(rho) / rho.size
    n = np.array(shape)
    half = (n - 1) // 2  # frequencies the grid holds on both sides
    inside = (np.abs(mill) <= half).all(axis=1)
    if inside.mean() < 0.5:
        raise InputError(f"the {'x'.join(map(str, shape))} grid holds only {inside.mean():.0%} of the run's "
                         f"G-vectors (ecutrho {ecutrho:g} Ry); predict on a finer grid (pw.x's FFT grid or finer)")
    values = np.zeros(len(mill), dtype=np.complex128)
    m = mill[inside]
    values[inside] = spectrum[m[:, 0] % n[0], m[:, 1] % n[1], m[:, 2] % n[2]]
    volume = abs(np.linalg.det(cell)) / Bohr**3
    electrons = float(values[0].real) * volume
    if not electrons > 0:
        raise InputError(f"the density holds no charge ({electrons:.6g} e)")
    if n_electrons is not None:
        values *= float(n_electrons) / electrons
    recip = 2 * np.pi * np.linalg.inv(cell / Bohr).T  # rows b_i, Bohr⁻¹
    with atomic_write(path, mode="wb") as f:
        _record(f, np.array([0, len(mill), 1], dtype=np.int32))  # gamma_only = .false., ngm_g, nspin = 1
        _record(f, recip.astype(np.float64))
        _record(f, mill)
        _record(f, values)


def read_charge_density(path: str | Path) -> dict:
    """The records of a ``charge-density.dat`` (non-HDF5, native byte order).

    Returns
    -------
    dict
        ``gamma_only`` (bool), ``nspin`` (int), ``b`` ((3, 3) Bohr⁻¹, rows), ``miller`` ((ngm, 3) int32),
        ``rho_g`` ((nspin, ngm) complex128, e/Bohr³ per the definition above).
    """
    raw = Path(path).read_bytes()
    pos = 0

    def record(dtype):
        nonlocal pos
        if pos + 4 > len(raw):
            raise InputError(f"{path}: not a QE charge-density file (ends at byte {pos})")
        size = int(np.frombuffer(raw, np.int32, 1, pos)[0])
        end = pos + 4 + size
        if size < 0 or end + 4 > len(raw) or int(np.frombuffer(raw, np.int32, 1, end)[0]) != size:
            raise InputError(f"{path}: not a QE charge-density file (bad record at byte {pos})")
        out = np.frombuffer(raw, dtype, size // np.dtype(dtype).itemsize, pos + 4)
        pos = end + 4
        return out

    gamma, ngm, nspin = (int(x) for x in record(np.int32)[:3])
    b = record(np.float64).reshape(3, 3).copy()
    mill = record(np.int32).reshape(ngm, 3).copy()
    rho = np.stack([record(np.complex128) for _ in range(nspin)])
    return {"gamma_only": bool(gamma), "nspin": nspin, "b": b, "miller": mill, "rho_g": rho}


def density_from_charge_density(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The total density of a ``charge-density.dat`` on a DESIGN §1 grid, e/Å³ (full-sphere files).

    G-vectors the grid cannot hold (|m_i| > (n_i − 1)/2) are dropped.
    """
    from ase.units import Bohr

    rec = read_charge_density(path)
    if rec["gamma_only"]:
        raise InputError(f"{path}: a gamma-only file holds half the G-sphere; read it with a full-sphere run's file")
    n = np.array(shape)
    spectrum = np.zeros(shape, dtype=np.complex128)
    m = rec["miller"]
    inside = (np.abs(m) <= (n - 1) // 2).all(axis=1)
    m = m[inside]
    spectrum[m[:, 0] % n[0], m[:, 1] % n[1], m[:, 2] % n[2]] = rec["rho_g"][0][inside]
    return np.fft.ifftn(spectrum).real * spectrum.size / Bohr**3
