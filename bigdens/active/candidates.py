"""The pool of candidate structures that active learning chooses from.

A candidate is one periodic structure that could be computed with DFT.  It comes from a structure
file (every frame of a multi-frame file) or from a generator: the starting structures of
``bigdens datagen`` (FCC Al or a Si–Ge alloy, with vacancies or a void) thermalized by the same
Langevin MD, every snapshot a candidate.  Candidates are identified by their structure hash
(:func:`bigdens.store.structure_hash`), the key of the DFT cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ase import Atoms

    from ..datagen import MDSettings

POOL_FORMAT = "bigdens-pool"
POOL_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    """One structure of the pool.

    Attributes
    ----------
    name : str
        Unique within the pool (e.g. ``al32-vac1-T0300-02`` or ``cells.extxyz@3``).
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å.
    positions : ndarray, shape (n_atoms, 3), float64
        Cartesian positions, Å.
    numbers : ndarray, shape (n_atoms,), int64
        Atomic numbers.
    source : str
        The file or generator it came from.
    info : dict
        How it was made (temperature, variant, thermalization; JSON-compatible).
    """

    name: str
    cell: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    source: str
    info: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        """sha256 of cell, positions and numbers: the DFT cache key."""
        from ..store import structure_hash

        return structure_hash(self.cell, self.positions, self.numbers)

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    def atoms(self) -> "Atoms":
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "hash": self.hash, "info": self.info,
                "cell": np.asarray(self.cell).tolist(), "positions": np.asarray(self.positions).tolist(),
                "numbers": np.asarray(self.numbers).tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Candidate":
        c = cls(str(d["name"]), np.array(d["cell"], dtype=np.float64), np.array(d["positions"], dtype=np.float64),
                np.array(d["numbers"], dtype=np.int64), str(d["source"]), dict(d.get("info") or {}))
        if "hash" in d and d["hash"] != c.hash:
            raise InputError(f"candidate {c.name!r} does not match its recorded hash: the pool file was edited")
        return c


def from_atoms(atoms: "Atoms", *, name: str, source: str, info: dict | None = None) -> Candidate:
    """A candidate of an ASE structure (validated: periodic cell, no overlapping atoms)."""
    from ..structure import validate

    validate(atoms)
    return Candidate(name, np.asarray(atoms.cell[:], dtype=np.float64).copy(),
                     np.asarray(atoms.positions, dtype=np.float64).copy(),
                     np.asarray(atoms.numbers, dtype=np.int64).copy(), source, dict(info or {}))


def from_file(path: str | Path, *, format: str | None = None) -> list[Candidate]:
    """Every frame of a structure file (any format ASE reads), one candidate each."""
    from ..structure import read_frames

    path = Path(path)
    frames = read_frames(path, format=format)
    if len(frames) == 1:
        return [from_atoms(frames[0], name=path.stem, source=str(path))]
    return [from_atoms(a, name=f"{path.stem}@{i}", source=f"{path}@{i}", info={"frame": i})
            for i, a in enumerate(frames)]


def from_generator(system: str, *, temperatures: Sequence[float], snapshots: int, md: "MDSettings",
                   cells: Sequence[int] = (1, 1, 1), x_values: Sequence[float] | None = None, vacancies: int = 0,
                   void: float | None = None, seed: int = 0, source: str = "",
                   progress: Callable[[str], None] | None = None) -> list[Candidate]:
    """The snapshots of ``bigdens datagen``'s thermalization (no DFT), one candidate each.

    Same starting structures (:func:`bigdens.datagen.build_variants`) and MD
    (:func:`bigdens.datagen.make_plan`) as ``bigdens datagen`` with these settings.
    """
    from ..datagen import build_variants, check_requirements, make_plan

    variants, info = build_variants(system, cells=cells, x_values=x_values, vacancies=vacancies, void=void,
                                    seed=seed)
    check_requirements(variants, md=md, dft=False)
    plan = make_plan(variants, temperatures=temperatures, snapshots_per_temperature=snapshots, md=md, seed=seed,
                     split_fractions=(1.0, 0.0, 0.0), variant_info=info, progress=progress)
    return [Candidate(p.name, p.cell, p.positions, p.numbers, source,
                      {"variant": p.variant, "temperature": p.temperature, "index": p.index,
                       "thermalization": p.thermalization})
            for p in plan]


def unique(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[str]]:
    """Candidates without exact duplicates (same structure hash; the first kept), names made unique.

    Returns the candidates and the names of the dropped duplicates.
    """
    seen: set[str] = set()
    names: dict[str, int] = {}
    out, dropped = [], []
    for c in candidates:
        h = c.hash
        if h in seen:
            dropped.append(c.name)
            continue
        seen.add(h)
        k = names.get(c.name, 0)
        names[c.name] = k + 1
        out.append(c if k == 0 else Candidate(f"{c.name}~{k}", c.cell, c.positions, c.numbers, c.source, c.info))
    return out, dropped


def save_pool(path: str | Path, candidates: Sequence[Candidate], *, request: Any = None) -> Path:
    """Write a pool file (JSON, atomically): the candidates and what made them."""
    from .._files import write_text

    write_text(Path(path), json.dumps({"format": POOL_FORMAT, "format_version": POOL_VERSION,
                                       "request": request,
                                       "candidates": [c.to_json() for c in candidates]}))
    return Path(path)


def is_pool_file(path: str | Path) -> bool:
    """Whether ``path`` is a pool file written by :func:`save_pool` (a ``.json`` of that format)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == POOL_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_pool(path: str | Path) -> list[Candidate]:
    """The candidates of a pool file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the pool file {str(path)!r} ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != POOL_FORMAT:
        raise InputError(f"{str(path)!r} is not a bigdens pool file")
    if d.get("format_version", 0) > POOL_VERSION:
        raise InputError(f"{str(path)!r} has pool format {d.get('format_version')}; upgrade bigdens")
    try:
        return [Candidate.from_json(c) for c in d["candidates"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the pool file {str(path)!r} is damaged ({type(exc).__name__}: {exc})") from None
