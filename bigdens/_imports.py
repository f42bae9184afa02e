"""Late imports of heavy or optional packages, with errors that say what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_INSTALL_HINTS = {
    "gpaw": "CC=g++ pip install -e '.[dft]' in the bigdens source folder (GPAW builds from its C++ sources)",
    "matscipy": "CC=g++ pip install -e '.[dft]' in the bigdens source folder (the dft extra: GPAW and matscipy)",
    "dask_jobqueue": "pip install dask-jobqueue",
}


def attempt_import(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError`.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"gpaw"``.
    purpose
        What the module is needed for, shown in the error message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(
            f"{purpose} needs the package {top!r}, which is not installed "
            f"({exc}). Install it with: {hint}"
        ) from None
