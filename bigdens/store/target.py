"""The output path of a run: whether it may be created, resumed or replaced (writing nothing), removing
what it replaces, and refusing to resume a store made with other settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import SetupError
from .layout import STORE_VERSION, read_attrs


def check_folder(path: str | Path) -> None:
    """Refuse an output path whose folder does not exist or cannot be written (writes nothing)."""
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise SetupError(f"the output folder {str(parent)!r} does not exist (or is not a folder); create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(f"the output folder {str(parent)!r} is not writable; choose another -o/--output")


def check_target(path: str | Path, *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the output path, writing nothing.

    Returns
    -------
    str
        ``"new"`` (nothing there), ``"resume"`` (a bigdens store to continue)
        or ``"overwrite"`` (something to replace).

    Raises
    ------
    SetupError
        If the path holds something and neither flag allows it, if ``resume``
        finds no bigdens store, or if the parent folder cannot be written.
    """
    path = Path(path)
    check_folder(path)
    exists = path.exists() or path.is_symlink()
    attrs = read_attrs(path) if path.is_dir() else None
    if resume:
        if attrs is None:
            what = "does not exist" if not exists else "is not a bigdens store"
            raise SetupError(f"cannot resume: {str(path)!r} {what}; run without --resume to start a new store")
        if int(attrs.get("format_version", 0)) > STORE_VERSION:
            raise SetupError(f"cannot resume {str(path)!r}: written by a newer bigdens "
                             f"({attrs.get('bigdens_version')}); upgrade bigdens")
        return "resume"
    if not exists:
        return "new"
    if not overwrite:
        if attrs is not None:
            raise SetupError(f"{str(path)!r} already holds a bigdens store; pass --resume to continue it or "
                             "--overwrite to replace it")
        raise SetupError(f"{str(path)!r} exists and is not a bigdens store; choose another -o/--output or pass "
                         "--overwrite")
    if path.is_dir() and not path.is_symlink() and attrs is None and not (path / "zarr.json").exists() \
            and any(path.iterdir()):
        # Refuse to delete a folder of unknown files even when asked: a typo in -o/--output must not cost data.
        raise SetupError(f"{str(path)!r} is a non-empty folder that is not a Zarr store; --overwrite only "
                         "replaces files and stores: remove it yourself or choose another -o/--output")
    return "overwrite"


def remove(path: str | Path) -> None:
    """Delete what :func:`check_target` agreed to overwrite.

    A folder is first renamed aside (atomic), so a writer that still holds the
    old path cannot race the deletion or mix files into a new store there.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".{path.name}.removing.{os.getpid()}")
        os.rename(path, aside)
        shutil.rmtree(aside)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_identity(attrs: dict, run: dict) -> None:
    """Refuse to resume a store made by a different run.

    ``run`` holds the fields that fix the numbers of every block (structure
    hash, grid shape, model hash, seed, samples, block, chunk); each must
    equal the store's ``run`` attribute.
    """
    have = attrs.get("run", {})
    flags = {"seed": "--seed", "mc_samples": "--mc-samples", "block": "--block", "chunk": "--block",
             "grid_shape": "--grid/--spacing", "model_hash": "--model", "structure_hash": "the structure file",
             "frames": "--frames"}
    diffs = [k for k in run if json.loads(json.dumps(have.get(k))) != json.loads(json.dumps(run[k]))]
    if diffs:
        parts = "; ".join(f"{k}: store has {have.get(k)!r}, this run {run[k]!r} (set by {flags.get(k, k)})"
                          for k in diffs)
        raise SetupError(f"cannot resume: the store was made with other settings ({parts}); rerun with the "
                         "store's settings or pass --overwrite to start again")
