"""bigdens: Bayesian machine-learned Kohn-Sham electron densities at scale.

Importing :mod:`bigdens` loads nothing heavy: numba, torch, zarr and dask are
imported by the modules that use them, when they are used.

Units everywhere in the API: lengths in Å, densities in electrons/Å³.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "predict"]


def __getattr__(name: str):
    # `bigdens.predict` loads the engine on first use, so `import bigdens` stays light.
    if name == "predict":
        from .engine import predict

        return predict
    raise AttributeError(f"module 'bigdens' has no attribute {name!r}")
