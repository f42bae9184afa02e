"""Models shipped with bigdens, and choosing one for a structure.

Each shipped model is a ``<name>.safetensors`` file in this folder (see
:mod:`bigdens.bnn` for the format); :func:`shipped_model_for` picks the one
whose species cover the structure's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

HERE = Path(__file__).parent

#: Shipped model name -> atomic numbers it knows (in its descriptor order).
SHIPPED = {"al": (13,), "sige": (14, 32)}


def shipped_models() -> dict[str, Path]:
    """Shipped models present in this installation, name -> path."""
    return {name: HERE / f"{name}.safetensors" for name in SHIPPED if (HERE / f"{name}.safetensors").is_file()}


def shipped_model_for(numbers) -> Path:
    """Path of the shipped model whose species include every atomic number in ``numbers``.

    Raises
    ------
    InputError
        If no shipped model covers the structure's species.
    """
    from ase.data import chemical_symbols

    present = set(np.unique(np.asarray(numbers)).tolist())
    available = shipped_models()
    for name, species in SHIPPED.items():
        if present <= set(species) and name in available:
            return available[name]
    have = sorted(chemical_symbols[z] for z in present)
    offers = {n: [chemical_symbols[z] for z in SHIPPED[n]] for n in available}
    raise InputError(
        f"no shipped model covers the species {have} (shipped: {offers or 'none yet'}); "
        "train one with `bigdens train` and pass it with --model"
    )
