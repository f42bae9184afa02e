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


class Interrupted(KeyboardInterrupt):
    """Raised when a signal stops a command: SIGINT (Ctrl-C) or SIGTERM (``kill``, SLURM preemption).

    The command line turns SIGTERM into this exception so that a run unwinds
    as on Ctrl-C (locks released, the cluster shut down).  Like
    :class:`KeyboardInterrupt` it is not a :class:`BigdensError`: ``except
    Exception`` does not catch it.

    Attributes
    ----------
    signal : str
        ``"SIGINT"`` or ``"SIGTERM"``.
    progress : str or None
        What the interrupted work left and how to finish it, e.g. ``"3 of 27
        blocks are done; rerun with --resume to finish"`` (set by the code that
        knows; None if nothing was written).
    """

    def __init__(self, signal: str = "SIGINT", progress: str | None = None):
        super().__init__(signal)
        self.signal = signal
        self.progress = progress
