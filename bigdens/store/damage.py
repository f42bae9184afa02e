"""One-line errors for a damaged store, each naming the damage and the repair."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .layout import VARIABLES

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import InputError


#: How many damaged blocks or problems an error message names.
SHOWN = 5


def repair_hint(path: str | Path) -> str:
    """What to run to recompute damaged blocks of the store at ``path``."""
    return f"repair it with `bigdens verify --repair {path}`, then `bigdens predict ... --resume`"


def damage_error(path: str | Path, bad: list[tuple[int, str]], *, n_blocks: int) -> "InputError":
    """One-line error naming damaged blocks (first :data:`SHOWN` and the count) and the repair."""
    from ..errors import InputError

    first = {}
    for index, why in sorted(bad, key=lambda b: b[0]):
        first.setdefault(index, why)
    items = list(first.items())
    shown = "; ".join(f"block {i}: {why}" for i, why in items[:SHOWN]) + ("; ..." if len(items) > SHOWN else "")
    return InputError(f"{str(path)!r} is damaged: {len(items)} of {n_blocks} blocks fail their ledger check "
                      f"({shown}); {repair_hint(path)}")


def problems_error(path: str | Path, problems: list[tuple[str, str]]) -> "InputError":
    """One-line error for damage found by :func:`check_metadata`, with the repair."""
    from ..errors import InputError

    shown = "; ".join(f"{name}: {why}" for name, why in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    if all(repairable(name) for name, _ in problems):
        hint = repair_hint(path)
    else:
        hint = ("its atoms cannot be rebuilt from the store: predict it again with `bigdens predict ... "
                "--overwrite`")
    return InputError(f"{str(path)!r} is damaged ({shown}{more}); {hint}")


def repairable(name: str) -> bool:
    """Whether :func:`repair_metadata` can rebuild the array (or file) ``name``.

    ``"ledger"`` (the folder) is made again empty; ``"attributes"`` (the run's results, recomputed from the
    ledger by :func:`~bigdens.store.verify`) and ``"charge…"`` (the per-atom charges, recomputed by
    :func:`bigdens.charges.check_store`) are written again by ``bigdens predict --resume``.
    """
    return name in VARIABLES or name in ("x", "y", "z", "zarr.json", "ledger", "attributes") or name.startswith("charge")
