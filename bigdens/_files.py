"""File helpers shared by every layer: the one atomic write and the one file hash.

A file bigdens writes (cube, image, snapshot, plan, ledger entry, model) is
written through a temporary file in the destination's folder and renamed over
the destination, so a reader never sees a partial file and an interrupted
write (Ctrl-C, SIGTERM, an exception) leaves the old file, or nothing, and no
temporary behind.  Only SIGKILL can leave a temporary: its name is
``.NAME.PID.tmp`` (hidden; the data sets' ``.gitignore`` ignores it).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import SetupError


def temporary_name(path: str | Path) -> Path:
    """The temporary file an atomic write of ``path`` goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_write(path: str | Path, *, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Parameters
    ----------
    path
        Destination file.
    mode
        ``"wb"`` (default) or ``"w"`` (text).
    fsync
        Flush the data to disk before the rename (default True), so a crash
        after the rename cannot leave an empty file.

    Raises
    ------
    SetupError
        If the destination's folder does not exist or cannot be written
        (checked before the block runs).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.absolute().parent
    if not folder.is_dir():
        raise SetupError(f"cannot write {str(path)!r}: its folder does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SetupError(f"cannot write {str(path)!r}: permission denied; choose a writable destination")
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, fsync=fsync) as fh:
        fh.write(data)


def write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, mode="w", fsync=fsync) as fh:
        fh.write(text)


def file_hash(path: str | Path) -> str:
    """sha256 of the file at ``path``, hex (read in 1 MiB chunks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_figure(path: str | Path, fig, *, format: str = "png", dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``path`` atomically (never a half-written image) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format=format, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


__all__ = ["atomic_write", "file_hash", "temporary_name", "write_bytes", "write_figure", "write_text"]
