"""The plan of a data set: every snapshot to compute, its split and the generation order.

:func:`make_plan` thermalizes the starting structures (:mod:`bigdens.datagen.md`)
and assigns the splits; the plan is written to ``plan.json`` in the output
directory before any DFT runs, so that a rerun on the same directory resumes
the same snapshots.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from .md import check_temperatures, thermalize
from .settings import MDSettings

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: One line per thermalized trajectory, at INFO (a child of ``bigdens.datagen``; ``bigdens datagen`` shows them).
logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class PlannedSnapshot:
    """One configuration to compute.

    Attributes
    ----------
    name : str
        Snapshot name (file stem).
    variant : str
        Label of the starting structure.
    temperature : float
        Thermostat temperature, K.
    index : int
        Number of the snapshot within its trajectory.
    split : str
        ``"train"``, ``"validation"`` or ``"test"``.
    cell, positions, numbers
        Structure (Å).
    thermalization : dict
        How the configuration was made (JSON-compatible).
    """

    name: str
    variant: str
    temperature: float
    index: int
    split: str
    cell: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    thermalization: dict = field(default_factory=dict)

    def atoms(self) -> "Atoms":
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "variant": self.variant, "temperature": self.temperature, "index": self.index,
            "split": self.split, "cell": np.asarray(self.cell).tolist(),
            "positions": np.asarray(self.positions).tolist(), "numbers": np.asarray(self.numbers).tolist(),
            "thermalization": self.thermalization,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PlannedSnapshot":
        return cls(d["name"], d["variant"], float(d["temperature"]), int(d["index"]), d["split"],
                   np.array(d["cell"], dtype=np.float64), np.array(d["positions"], dtype=np.float64),
                   np.array(d["numbers"], dtype=np.int64), d.get("thermalization", {}))


def assign_splits(groups: Sequence[Sequence[str]], *, fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Deterministic train/validation/test assignment, stratified by group.

    Snapshots are visited group by group (each group shuffled with ``seed``);
    each goes to the split whose count lags its quota
    (``fraction · number visited``) the most.  So every group (e.g. one
    temperature) gets close to the requested fractions, and the totals match.

    Parameters
    ----------
    groups
        Snapshot names, one list per group.
    fractions
        Train, validation, test fractions (non-negative, summing to 1).
    """
    from ..data import SPLITS

    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)!r}")
    rng = np.random.default_rng(seed)
    counts = np.zeros(3)
    out: dict[str, str] = {}
    visited = 0
    for group in groups:
        for i in rng.permutation(len(group)):
            visited += 1
            k = int(np.argmax(f * visited - counts - 1e-9 * np.arange(3)))
            counts[k] += 1
            out[group[i]] = SPLITS[k]
    return out


def _temperature_tag(t: float) -> str:
    return f"T{t:04.0f}" if float(t).is_integer() else f"T{t:07.2f}"


def make_plan(
    variants: dict[str, "Atoms"],
    *,
    temperatures: Sequence[float],
    snapshots_per_temperature: int,
    md: MDSettings,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    variant_info: dict[str, dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[PlannedSnapshot]:
    """Thermalize every variant at every temperature; return the snapshots.

    The returned order is the generation order: round-robin over the
    (variant, temperature) trajectories, so a partly generated data set covers
    all of them.  Each trajectory is seeded from ``(seed, variant number,
    temperature number)``.  Progress lines go to ``progress`` if given, else
    to the module loggers (``bigdens.datagen.plan`` and ``.md``, INFO).
    """
    from ..structure import validate

    temps = check_temperatures(temperatures)
    if snapshots_per_temperature < 1:
        raise InputError(f"--snapshots-per-temperature must be >= 1, got {snapshots_per_temperature!r}")
    trajectories = []
    for iv, (label, atoms) in enumerate(variants.items()):
        validate(atoms)
        for it, t in enumerate(temps):
            traj_seed = int(np.random.SeedSequence([seed, iv, it]).generate_state(1)[0])
            (progress or logger.info)(f"thermalizing {label} at {t:g} K ({len(atoms)} atoms)")
            configs = thermalize(atoms, t, n_snapshots=snapshots_per_temperature, md=md, seed=traj_seed,
                                 progress=progress)
            extra = (variant_info or {}).get(label, {})
            trajectories.append([
                (f"{label}-{_temperature_tag(t)}-{k:02d}", label, t, k, atoms, pos, dict(info, structure=extra))
                for k, (pos, info) in enumerate(configs)
            ])
    splits = assign_splits([[s[0] for s in traj] for traj in trajectories], fractions=split_fractions, seed=seed)
    plan = []
    for k in range(snapshots_per_temperature):
        for traj in trajectories:
            name, label, t, idx, atoms, pos, info = traj[k]
            plan.append(PlannedSnapshot(name, label, t, idx, splits[name], np.asarray(atoms.cell[:]), pos,
                                        atoms.numbers.copy(), info))
    return plan


def save_plan(directory: Path, plan: list[PlannedSnapshot], *, request: dict[str, Any]) -> None:
    """Write ``plan.json`` (atomically)."""
    from .._files import write_text

    write_text(directory / PLAN_FILE, json.dumps({"plan_version": PLAN_VERSION, "request": request,
                                                  "snapshots": [p.to_json() for p in plan]}))


def _read_plan_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{str(path)!r} is damaged; delete it to plan the run again") from None


def read_plan(directory: str | Path) -> list[PlannedSnapshot]:
    """Every planned snapshot of a data-set directory (its ``plan.json``)."""
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        raise InputError(f"{str(directory)!r} has no {PLAN_FILE}; give a data-set directory made by bigdens datagen")
    return [PlannedSnapshot.from_json(d) for d in _read_plan_file(path)["snapshots"]]


def read_request(directory: str | Path) -> dict[str, Any] | None:
    """The request saved with the plan of ``directory`` (what defined the run), or None without a plan."""
    path = Path(directory) / PLAN_FILE
    return _read_plan_file(path).get("request", {}) if path.is_file() else None


def load_plan(directory: Path, *, request: dict[str, Any], ignore: Sequence[str] = ()) -> list[PlannedSnapshot] | None:
    """The saved plan of ``directory`` if any; InputError if made by another request.

    ``ignore`` names request keys that may differ (``generate`` ignores the
    protocol's when told to add another protocol's snapshots to a data set).
    """
    path = directory / PLAN_FILE
    if not path.is_file():
        return None
    saved = _read_plan_file(path)
    old = {k: v for k, v in saved.get("request", {}).items() if k not in ignore}
    new = {k: v for k, v in json.loads(json.dumps(request)).items() if k not in ignore}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise InputError(
            f"{str(directory)!r} was started with other settings (differing: {', '.join(diff)}); "
            "rerun with the same arguments to resume, or write to a new directory with -o"
        )
    return [PlannedSnapshot.from_json(d) for d in saved["snapshots"]]
