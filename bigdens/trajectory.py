"""Trajectories: the frames of a multi-frame structure file selected for one store.

A prediction over a trajectory (``bigdens predict --frames``, :func:`bigdens.engine.run` of a
:class:`Trajectory`) writes one store whose frames share the cell, atom count and atomic numbers;
positions are in Å, times in the file's own units.  Reading the file itself (format, parse errors)
is :mod:`bigdens.structure`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .structure import _checked_format, _parse_error

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: ``atoms.info`` keys read as a frame's time (first found; the file's own units) and MD step.
TIME_KEYS = ("time", "Time", "t")
STEP_KEYS = ("step", "timestep", "Step", "MD_step", "nstep")


@dataclass
class Trajectory:
    """Frames of one structure file selected for a prediction into one store.

    Attributes
    ----------
    frames : list of ase.Atoms
        The selected frames (positions Å); same cell, atom count and atomic numbers.
    index : list of int
        Each frame's index in the file (0-based).
    time : list of float, or None
        Each frame's ``atoms.info`` time (a key of :data:`TIME_KEYS`), in the file's units; None unless
        every selected frame carries one.
    step : list of int, or None
        Each frame's MD step (a key of :data:`STEP_KEYS`; LAMMPS dumps give ``timestep``); None unless
        every selected frame carries one.
    """

    frames: list
    index: list
    time: list | None = None
    step: list | None = None

    def __len__(self) -> int:
        return len(self.frames)


def parse_frames(text: str) -> slice:
    """``"START:STOP:STEP"`` (each part optional; a bare ``K`` is frame K alone) -> slice; SetupError if malformed.

    Negative numbers count from the end, as in Python.
    """
    from .errors import SetupError

    parts = text.split(":")
    try:
        if len(parts) == 1:
            k = int(parts[0])
            return slice(k, k + 1 if k != -1 else None, 1)
        if len(parts) > 3:
            raise ValueError
        start, stop, *rest = (int(p) if p.strip() else None for p in parts)
        step = rest[0] if rest else None
    except ValueError:
        raise SetupError(f"--frames must look like START:STOP:STEP (e.g. 0:100:10, each part optional), got "
                         f"{text!r}") from None
    if step is not None and step <= 0:
        raise SetupError(f"--frames {text!r}: STEP must be a positive integer, got {step}")
    return slice(start, stop, step)


def select_frames(n_frames: int, frames: slice, *, where: str, text: str) -> list[int]:
    """The file's frame indices ``frames`` selects among ``n_frames``; InputError if out of range or empty."""
    if n_frames == 0:
        raise InputError(f"{where} holds no frames (an empty trajectory)")
    for bound, top in ((frames.start, n_frames - 1), (frames.stop, n_frames)):
        if bound is not None and not -n_frames <= bound <= top:
            raise InputError(f"--frames {text}: frame {bound} is out of range: {where} holds {n_frames} frames "
                             f"(0 to {n_frames - 1})")
    picked = list(range(n_frames))[frames]
    if not picked:
        raise InputError(f"--frames {text} selects no frame of the {n_frames} in {where}")
    return picked


def read_trajectory(path: str | Path, *, frames: slice, text: str = "", format: str | None = None) -> Trajectory:
    """The frames ``frames`` of a multi-frame structure file (extxyz, ``lammps-dump-text``, ASE .traj, ...).

    Reads the file once, frame by frame, keeping only the selected frames.

    Raises
    ------
    InputError
        If the file cannot be read (as :func:`bigdens.structure.read`), holds no frame, the selection is out
        of range or empty, or the frames differ in cell, atom count or atomic numbers (naming the first that
        differs).
    """
    from ase.io import iread

    path = Path(path)
    where = f"structure file {str(path)!r}"
    fmt = _checked_format(path, format)
    kept: dict[int, "Atoms"] = {}
    n = 0
    want = None if frames.start is not None and frames.start < 0 or frames.stop is not None and frames.stop < 0 \
        else frames
    from tqdm import tqdm

    try:  # a bar on a terminal (a file of 10⁴ frames takes minutes to read)
        for atoms in tqdm(iread(path, index=":", format=fmt), unit="frame", desc="reading frames", disable=None,
                          delay=2.0):
            if want is None or _in_slice(n, want):
                kept[n] = atoms
            n += 1
    except Exception as exc:  # ASE raises many types; one message for the user
        raise InputError(_parse_error(where, fmt, format, path, exc)) from None
    picked = select_frames(n, frames, where=where, text=text or _slice_text(frames))
    chosen = [kept[i] for i in picked]
    check_frames(chosen, picked, where=where)
    return Trajectory(frames=chosen, index=picked, time=_info_values(chosen, TIME_KEYS, float),
                      step=_info_values(chosen, STEP_KEYS, int))


def _in_slice(i: int, s: slice) -> bool:
    start, step = s.start or 0, s.step or 1
    return i >= start and (s.stop is None or i < s.stop) and (i - start) % step == 0


def _slice_text(s: slice) -> str:
    return ":".join("" if v is None else str(v) for v in (s.start, s.stop, s.step))


def _info_values(frames: list, keys: tuple, kind) -> list | None:
    # A value per frame from the first key every frame's info holds, or None.
    for key in keys:
        if all(key in a.info for a in frames):
            try:
                return [kind(a.info[key]) for a in frames]
            except (TypeError, ValueError):
                return None
    return None


def check_frames(frames: list, index: list, *, where: str = "the trajectory") -> None:
    """Refuse frames that differ from the first in cell, atom count or atomic numbers (InputError, one line)."""
    first = frames[0]
    cell0 = np.asarray(first.cell[:], dtype=np.float64)
    for k, atoms in enumerate(frames[1:], start=1):
        if len(atoms) != len(first):
            raise InputError(f"{where}: frame {index[k]} has {len(atoms)} atoms, frame {index[0]} has {len(first)}; "
                             "every frame of a trajectory store must hold the same atoms")
        if not np.array_equal(np.asarray(atoms.cell[:], dtype=np.float64), cell0):
            diff = float(np.abs(np.asarray(atoms.cell[:]) - cell0).max())
            raise InputError(f"{where}: the cell of frame {index[k]} differs from frame {index[0]}'s (by up to "
                             f"{diff:.3g} Å); a trajectory store needs a constant cell (NVT/NVE): predict "
                             "constant-cell stretches separately")
        if not np.array_equal(atoms.numbers, first.numbers):
            i = int(np.argmax(atoms.numbers != first.numbers))
            raise InputError(f"{where}: atom {i} of frame {index[k]} is element {int(atoms.numbers[i])}, in frame "
                             f"{index[0]} element {int(first.numbers[i])}; every frame must hold the same atoms "
                             "in the same order")
