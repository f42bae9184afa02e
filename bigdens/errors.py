"""Exceptions raised by bigdens.

Every error meant for a user derives from :class:`BigdensError`; the command
line prints its message alone (no traceback unless ``--debug``).  Setup errors
are raised before any work starts (bad input, bad configuration); run errors
while work is under way (a failed DFT run, a store that cannot be written).
"""

from __future__ import annotations


class BigdensError(Exception):
    """Base class of every error bigdens reports to a user."""


class SetupError(BigdensError, ValueError):
    """Raised before any work starts: bad arguments, configuration or files."""


class InputError(SetupError):
    """Raised when an input structure, grid, model or data set is invalid."""


class MissingDependencyError(SetupError, ImportError):
    """Raised when an optional package needed for a feature is not installed."""


class RunError(BigdensError, RuntimeError):
    """Raised when work that was correctly set up fails while running."""
