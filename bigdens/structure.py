"""Periodic structures: reading, validation, and vectorised builders.

Builders return :class:`ase.Atoms` with ``pbc=True``; positions in Å.  All of
them work on whole arrays (no Python loop per atom), so a 4,000,000-atom cell
builds in seconds and 10^7 atoms fit in memory (positions take 24 bytes/atom).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Lattice constants, Å.
A_AL = 4.05
A_SI = 5.431
A_GE = 5.658

#: Atoms closer than this (Å) are refused as unphysical.
MIN_DISTANCE = 0.5
#: Atoms more than this many cell lengths from the cell (a fractional coordinate beyond ±this) are refused:
#: unwrapped MD coordinates reach thousands of cells at most, and beyond 10^6 float64 keeps fewer than 10 of
#: its 16 digits for the place within the cell (at 10^16 none).
MAX_CELLS_AWAY = 1e6

_FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
_DIAMOND_BASIS = np.concatenate([_FCC_BASIS, _FCC_BASIS + 0.25])


#: Suffixes that several programs use for different formats: a failed read suggests --format.
_GENERIC_SUFFIXES = frozenset({"data", "dat", "txt", "in", "out", "log", "inp", "input", "lmp", "lammps"})


def _checked_format(path: Path, format: str | None) -> str:
    """The ASE format of an existing, non-empty structure file, or InputError."""
    where = f"structure file {str(path)!r}"
    if path.is_dir():
        raise InputError(f"{where} is a directory; give a structure file (extxyz, POSCAR, CIF, ...)")
    if not path.is_file():
        raise InputError(f"{where} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{where} is empty (0 bytes)")
    fmt, known = _structure_format(path, format)
    if not known and format is not None:
        raise InputError(f"--format {format!r} is not a format ASE reads; e.g. extxyz, vasp, cif, lammps-data "
                         "(`ase info --formats` lists them)")
    if not known:
        raise InputError(
            f"cannot tell the format of {where} (ASE knows no format {fmt!r} for its name); name it with "
            "--format, e.g. --format lammps-data"
        )
    _check_text_lines(path, fmt)
    return fmt


#: Longest first line a text structure file may have, bytes: a header or one atom's line is far shorter,
#: and ASE reads a line whole (a 2 GB file without a newline took 10 GB of memory before its error).
MAX_LINE_BYTES = 1 << 20


def _check_text_lines(path: Path, fmt: str) -> None:
    """Refuse a text-format file whose first :data:`MAX_LINE_BYTES` bytes hold no line break, before ASE reads it."""
    from ase.io.formats import ioformats

    spec = ioformats.get(fmt)
    if spec is None or spec.isbinary or path.stat().st_size <= MAX_LINE_BYTES:
        return
    with open(path, "rb") as fh:
        head = fh.read(MAX_LINE_BYTES)
    if b"\n" not in head and b"\r" not in head:
        raise InputError(f"structure file {str(path)!r} cannot be a {fmt!r} file: its first "
                         f"{MAX_LINE_BYTES // 2**20} MiB holds no line break; give a structure file (or name its "
                         "format with --format)")


def read_frames(path: str | Path, *, format: str | None = None) -> list["Atoms"]:
    """Every frame of a structure file (see :func:`read`; same errors), atoms outside the cell noted."""
    import warnings

    from ase.io import iread

    path = Path(path)
    fmt = _checked_format(path, format)
    try:
        frames = list(iread(path, index=":", format=fmt))
    except Exception as exc:  # ASE raises many types; one message for the user
        raise InputError(_parse_error(f"structure file {str(path)!r}", fmt, format, path, exc)) from None
    if not frames:
        raise InputError(f"structure file {str(path)!r} holds no structure that ASE's {fmt!r} reader finds")
    for i, atoms in enumerate(frames):
        n_out, first = _atoms_outside_cell(atoms)
        if n_out:
            warnings.warn(f"structure file {str(path)!r}, frame {i}: {n_out} atom(s) lie far outside the cell "
                          f"(first: atom {first}); they are wrapped into it", stacklevel=2)
    return frames


def read(path: str | Path, *, format: str | None = None, index: int | str = -1) -> "Atoms":
    """Read one periodic structure with ASE.

    Any format ASE reads works (extxyz, POSCAR, CIF, LAMMPS data, ...);
    ``format`` is guessed from the file name when not given.  LAMMPS data
    files need ``format="lammps-data"`` (ASE cannot guess them).

    A file of several frames (a trajectory) gives its last frame with the
    default ``index=-1``, and a :class:`UserWarning` saying so.  Atoms outside
    the cell (fractional coordinates outside [0, 1)) are kept where they are,
    with a :class:`UserWarning` naming how many: every consumer wraps them
    (the cell list bins fractional coordinates wrapped into [0, 1)), so they
    stand for their periodic images inside the cell.

    Raises
    ------
    InputError
        If the path is missing or a directory, the format is unknown, or ASE
        cannot parse the file, naming the file, the format tried and ASE's message.
    """
    import warnings

    path = Path(path)
    where = f"structure file {str(path)!r}"
    fmt = _checked_format(path, format)
    n_frames = 0
    try:
        if index == -1:  # the last frame, counting the frames one at a time (memory of one frame)
            from ase.io import iread

            atoms = None
            for atoms in iread(path, index=":", format=fmt):
                n_frames += 1
        else:
            from ase.io import read as ase_read

            atoms = ase_read(path, format=fmt, index=index)
    except Exception as exc:  # ASE raises many types; one message for the user
        raise InputError(_parse_error(where, fmt, format, path, exc)) from None
    if isinstance(atoms, list):  # index=":" was asked
        raise InputError(f"{str(path)!r} holds {len(atoms)} structures; choose one with index=")
    if atoms is None:
        hint = ("; name the format with --format, e.g. --format lammps-data"
                if format is None and _generic_suffix(path) else "")
        raise InputError(f"{where} holds no structure that ASE's {fmt!r} reader finds{hint}")
    if n_frames > 1:
        warnings.warn(f"{where} has {n_frames} frames; using the last (frame {n_frames - 1})", stacklevel=2)
    n_out, first = _atoms_outside_cell(atoms)
    if n_out:
        warnings.warn(
            f"{where}: {n_out} atom(s) lie far outside the cell (fractional coordinates outside "
            f"[{-OUTSIDE_MARGIN:g}, {1 + OUTSIDE_MARGIN:g}), first: "
            f"atom {first}); they are wrapped into it (each stands for its periodic image in the cell)",
            stacklevel=2,
        )
    return atoms


def _structure_format(path: Path, format: str | None) -> tuple[str, bool]:
    # (ASE format name, whether ASE has a reader of that name); guessed from the name/content when not given.
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    if format is None:
        try:
            format = filetype(str(path), read=True)
        except UnknownFileTypeError:
            return path.suffix.lstrip(".") or path.name, False
        except OSError as exc:
            raise InputError(f"cannot read structure file {str(path)!r} ({type(exc).__name__}: {exc})") from None
    fmt = ioformats.get(format)
    return format, fmt is not None and fmt.can_read


def _parse_error(where: str, fmt: str, asked: str | None, path: Path, exc: Exception) -> str:
    # One line: the format tried, ASE's message, and what to do.
    said = " ".join(f"{type(exc).__name__}: {exc}".split()).rstrip(":")
    if len(said) > 200:
        said = said[:197] + "..."
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return f"cannot read {where} ({said})"
    if asked is not None:
        return (f"cannot read {where} as --format {asked!r} ({said}); the file is damaged or not in that "
                "format")
    if _generic_suffix(path):  # a guess from a suffix many programs use
        return (f"cannot read {where} as {fmt!r}, the format ASE guesses from its name ({said}); name the "
                "format with --format, e.g. --format lammps-data")
    return f"{where} is damaged: it does not parse as {fmt!r} ({said}); check or rewrite the file"


def _generic_suffix(path: Path) -> bool:
    return "." in path.name and path.name.lower().rsplit(".", 1)[-1] in _GENERIC_SUFFIXES


#: Fractional distance beyond the cell's faces from which an atom's wrapping gets a note.
OUTSIDE_MARGIN = 0.5


def _atoms_outside_cell(atoms: "Atoms") -> tuple[int, int]:
    # (number of atoms with a fractional coordinate outside [0, 1), index of the first); (0, -1) when
    # the question does not apply (no 3-D cell, non-finite positions: validate() reports those).
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    pos = atoms.positions
    if not np.all(atoms.pbc) or len(pos) == 0 or not np.isfinite(cell).all():
        return 0, -1
    with np.errstate(all="ignore"):
        volume = abs(np.linalg.det(cell))
        if not volume > 1e-6 * max(np.linalg.norm(cell, axis=1).prod(), 1e-300):
            return 0, -1
    # Only atoms far outside earn a note: an atom a thermal displacement across a face (MD output) is normal.
    tol = OUTSIDE_MARGIN
    n_out, first = 0, -1
    rows = 1 << 16
    for s in range(0, len(pos), rows):
        f = np.linalg.solve(cell.T, pos[s : s + rows].T).T
        with np.errstate(invalid="ignore"):  # beyond MAX_CELLS_AWAY: validate() refuses them
            out = ((f < -tol) | (f >= 1.0 + tol)).any(axis=1) & (np.abs(f) <= MAX_CELLS_AWAY).all(axis=1)
        if out.any():
            if first < 0:
                first = s + int(np.argmax(out))
            n_out += int(out.sum())
    return n_out, first


def validate(atoms: "Atoms", *, min_distance: float = MIN_DISTANCE) -> None:
    """Check that ``atoms`` is a valid periodic structure, or raise InputError.

    Checks: at least one atom; finite positions no farther than
    :data:`MAX_CELLS_AWAY` cell lengths from the cell; a fully periodic cell
    whose lattice vectors are linearly independent; no two atoms (including
    periodic images of one atom) closer than ``min_distance`` Å.  Atoms outside
    the cell are fine otherwise: every check works on wrapped positions.
    """
    if len(atoms) == 0:
        raise InputError("the structure is empty (0 atoms)")
    if not np.all(atoms.pbc):
        raise InputError(
            f"the structure must be periodic in all three directions, got pbc={atoms.pbc.tolist()}; "
            "put a molecule or slab in a box with vacuum and set atoms.pbc = True"
        )
    cell = check_cell(atoms.cell[:])
    pos = atoms.positions
    check_positions(cell, pos)
    from .celllist import build_cell_list, min_image_pairs_closer_than

    pairs = min_image_pairs_closer_than(build_cell_list(cell, pos), min_distance, max_report=1)
    if len(pairs):
        i, j, d = int(pairs[0, 0]), int(pairs[0, 1]), pairs[0, 2]
        what = "an image of itself" if i == j else f"atom {j}"
        raise InputError(
            f"atom {i} is {d:.3f} Å from {what} (minimum allowed {min_distance} Å); "
            "check the cell and the position units (Å)"
        )


def check_positions(cell: np.ndarray, positions: np.ndarray) -> None:
    """InputError unless every position is finite and within :data:`MAX_CELLS_AWAY` cell lengths of the cell.

    Parameters
    ----------
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å (non-singular: :func:`check_cell`).
    positions : ndarray, shape (n_atoms, 3)
        Cartesian positions, Å.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} atom(s) have NaN or infinite positions (first: atom {int(np.argmax(bad))})"
        )
    cell_t = np.asarray(cell, dtype=np.float64).T
    n_far, first, cells = 0, -1, 0.0
    rows = 1 << 16
    for s in range(0, len(pos), rows):
        away = np.abs(np.linalg.solve(cell_t, pos[s : s + rows].T)).max(axis=0)
        far = away > MAX_CELLS_AWAY
        if far.any():
            if first < 0:
                first = s + int(np.argmax(far))
                cells = float(away[first - s])
            n_far += int(far.sum())
    if n_far:
        raise InputError(
            f"{n_far} atom(s) lie more than {MAX_CELLS_AWAY:.0e} cell lengths from the cell (first: atom {first}, "
            f"{float(np.linalg.norm(pos[first])):.3g} Å from the origin, {cells:.3g} cell lengths): float64 "
            "cannot place them within the cell; check the positions and their units, or wrap them into the cell"
        )


def check_cell(cell) -> np.ndarray:
    """The cell as a float64 array, shape (3, 3) (rows a1, a2, a3, Å), or InputError if singular.

    A cell is singular when a lattice vector is not finite or the three are
    (nearly) linearly dependent: volume ≤ 1e-6 × |a1|·|a2|·|a3|.
    """
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise InputError(f"a cell is three lattice vectors (a 3×3 array, Å), got shape {cell.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        volume = abs(np.linalg.det(cell)) if np.isfinite(cell).all() else float("nan")
        lengths = np.linalg.norm(cell, axis=1)
        if not volume > 1e-6 * max(lengths.prod(), 1e-300):
            raise InputError(
                f"the cell is singular (volume {volume:.3g} Å³, lattice vectors {cell.tolist()}); "
                "give three linearly independent lattice vectors"
            )
    return cell


def _positive_length(value: float, what: str) -> float:
    # A length, Å: a finite positive number, else one clear error naming it.
    if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
        raise InputError(f"{what} must be > 0 Å, got {value!r}")
    return float(value)


def _rng(seed: int) -> np.random.Generator:
    # numpy's generator for a user seed; numpy itself rejects negative seeds with a bare ValueError.
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_cells(cells) -> tuple[int, int, int]:
    cells = tuple(int(c) for c in np.broadcast_to(np.asarray(cells), (3,)))
    if min(cells) < 1:
        raise InputError(f"cells must be positive integers, got {cells}")
    return cells


def _lattice(basis: np.ndarray, cells: tuple[int, int, int], a: float) -> np.ndarray:
    # Positions of a cubic lattice with `basis` (fractional, per conventional cell), Å.
    idx = np.indices(cells, dtype=np.float64).reshape(3, -1).T  # (ncells, 3)
    pos = (idx[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    pos *= a
    return pos


def fcc_al(cells=(1, 1, 1), *, a: float = A_AL) -> "Atoms":
    """Bulk FCC aluminium of ``n1 × n2 × n3`` conventional (4-atom) cubic cells.

    Parameters
    ----------
    cells
        Repeats ``(n1, n2, n3)`` (an int means the same along all three).
    a
        Lattice constant, Å.
    """
    from ase import Atoms

    cells = _check_cells(cells)
    a = _positive_length(a, "lattice constant")
    pos = _lattice(_FCC_BASIS, cells, a)
    return Atoms(numbers=np.full(len(pos), 13), positions=pos, cell=np.diag(np.array(cells) * a), pbc=True)


def vegard(x: float) -> float:
    """Lattice constant of Si(1−x)Ge(x) by Vegard's law, Å."""
    return (1.0 - x) * A_SI + x * A_GE


def diamond_sige(cells=(1, 1, 1), *, x: float, a: float | None = None, seed: int = 0) -> "Atoms":
    """Random Si(1−x)Ge(x) alloy on the diamond lattice.

    Exactly ``round(x * n_atoms)`` sites hold Ge, chosen at random (seeded).

    Parameters
    ----------
    cells
        Repeats of the 8-atom conventional cubic cell.
    x
        Ge fraction in [0, 1].
    a
        Lattice constant, Å; Vegard's law between Si (5.431) and Ge (5.658) when None.
    seed
        Seed of the random site assignment.
    """
    from ase import Atoms

    cells = _check_cells(cells)
    if not 0.0 <= x <= 1.0:
        raise InputError(f"Ge fraction x must be within [0, 1], got {x!r}")
    a = _positive_length(vegard(x) if a is None else a, "lattice constant")
    rng = _rng(seed)
    pos = _lattice(_DIAMOND_BASIS, cells, a)
    n = len(pos)
    numbers = np.full(n, 14, dtype=np.int64)
    n_ge = int(round(x * n))
    numbers[rng.permutation(n)[:n_ge]] = 32
    return Atoms(numbers=numbers, positions=pos, cell=np.diag(np.array(cells) * a), pbc=True)


def _within(atoms: "Atoms", center: np.ndarray, radius: float) -> np.ndarray:
    """Mask, shape (n_atoms,), of the atoms with a periodic image within ``radius`` Å of ``center``.

    Exact for any cell.  Each atom is first taken to the image whose
    fractional offset from ``center`` lies in [-0.5, 0.5]; when ``radius`` is
    below half of every lattice-plane spacing no other image can be within
    ``radius``, so one vectorised pass decides.  Larger radii also try the
    neighbouring images, one pass per integer shift.
    """
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    frac = np.linalg.solve(cell.T, (atoms.positions - center).T).T
    frac -= np.round(frac)
    disp = frac @ cell
    inside = np.einsum("ij,ij->i", disp, disp) <= radius * radius
    # Image shift n along i can reach the sphere only if |n| <= radius·|b_i| + 0.5.
    from .celllist import plane_normals_norm

    reach = np.floor(radius * plane_normals_norm(cell) + 0.5).astype(int)
    if reach.any():
        for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
            if any(shift):
                disp = (frac + np.array(shift)) @ cell
                inside |= np.einsum("ij,ij->i", disp, disp) <= radius * radius
    return inside


def _center(atoms: "Atoms", center) -> np.ndarray:
    if center is None:
        return np.asarray(atoms.cell[:]).sum(axis=0) / 2.0
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (3,) or not np.isfinite(c).all():
        raise InputError(f"center must be three finite Cartesian coordinates (Å), got {center!r}")
    return c


def remove_vacancies(atoms: "Atoms", k: int, *, seed: int = 0) -> "Atoms":
    """Copy of ``atoms`` with ``k`` atoms, chosen at random, removed.

    Parameters
    ----------
    atoms
        The structure.
    k
        Number of vacancies, 0 ≤ k < ``len(atoms)``.
    seed
        Seed of the random choice (an integer ≥ 0).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(atoms):
        raise InputError(f"number of vacancies must be within [0, {len(atoms) - 1}], got {k!r}")
    keep = np.ones(len(atoms), dtype=bool)
    keep[_rng(seed).choice(len(atoms), size=int(k), replace=False)] = False
    return atoms[keep]


def carve_void(atoms: "Atoms", radius: float, *, center=None) -> "Atoms":
    """Copy of ``atoms`` without the atoms that have a periodic image within ``radius`` of ``center``.

    Parameters
    ----------
    atoms
        The structure (any periodic cell).
    radius
        Void radius, Å.
    center : array_like, shape (3,), optional
        Void centre, Cartesian, Å; the middle of the cell when None.
    """
    radius = _positive_length(radius, "void radius")
    keep = ~_within(atoms, _center(atoms, center), radius)
    if not keep.any():
        raise InputError(f"a void of radius {radius} Å removes every atom of the cell")
    return atoms[keep]


def substitute_cluster(atoms: "Atoms", radius: float, *, symbol: str | int, center=None) -> "Atoms":
    """Copy of ``atoms`` with every atom within ``radius`` of ``center`` (any image) replaced by ``symbol``.

    Parameters
    ----------
    atoms
        The structure (any periodic cell).
    radius
        Cluster radius, Å.
    symbol
        Chemical symbol or atomic number of the substituted atoms.
    center : array_like, shape (3,), optional
        Cluster centre, Cartesian, Å; the middle of the cell when None.
    """
    from ase.data import atomic_numbers

    z = symbol if isinstance(symbol, int) else atomic_numbers.get(symbol)
    if z is None or not 0 < z < 119:
        raise InputError(f"unknown chemical element {symbol!r}")
    radius = _positive_length(radius, "cluster radius")
    out = atoms.copy()
    inside = _within(atoms, _center(atoms, center), radius)
    numbers = out.numbers
    numbers[inside] = z
    out.numbers = numbers
    return out


def rattle(atoms: "Atoms", rms: float, *, seed: int = 0) -> "Atoms":
    """Copy of ``atoms`` with Gaussian displacements (thermal-like disorder).

    Parameters
    ----------
    atoms
        The structure.
    rms
        Standard deviation of each Cartesian displacement component, Å (the
        displacement vector's rms length is ``√3·rms``); 0 leaves the atoms in place.
    seed
        Seed of the displacements (an integer ≥ 0).
    """
    if not (isinstance(rms, (int, float, np.floating)) and np.isfinite(rms) and rms >= 0):
        raise InputError(f"rattle amplitude must be >= 0 Å, got {rms!r}")
    out = atoms.copy()
    out.positions = atoms.positions + _rng(seed).normal(0.0, rms, size=(len(atoms), 3))
    return out


def species_counts(atoms: "Atoms | np.ndarray") -> dict[str, int]:
    """Number of atoms per chemical symbol, e.g. ``{"Si": 32, "Ge": 32}`` (Atoms or atomic numbers)."""
    from ase.data import chemical_symbols

    z, n = np.unique(np.asarray(getattr(atoms, "numbers", atoms)), return_counts=True)
    return {chemical_symbols[int(a)]: int(b) for a, b in zip(z, n)}
