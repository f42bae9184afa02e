"""The ``bigdens`` command line.

Each sub-command lives in its own module of this package, exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy packages inside ``run`` only, so ``bigdens --help``
stays fast.  A module that cannot be imported makes every command fail with
one line naming it (:class:`CommandImportError`), never a command that is
silently missing.

One vocabulary across the commands: ``-o/--output`` for the file or folder a
command writes, ``--threads`` for the threads of this process,
``--device {auto,cpu,cuda}`` with the default of the config object behind the
command, ``--split NAME`` for a split name, ``--keep-variance`` to keep a
model's variance factor, and ``--debug`` before or after the sub-command.
Old spellings (``predict --out``, ``export --cube``, ``finetune
--keep-calibration``) are accepted as hidden aliases.  A sub-command's usage
errors are one line, as its other errors are.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from .._version import __version__
from ..errors import BigdensError, InputError, Interrupted
from ._common import check_output

#: Sub-command name -> module (relative to this package).
COMMANDS: dict[str, str] = {
    "build": ".build",
    "describe": ".describe",
    "datagen": ".datagen",
    "data": ".data",
    "train": ".train",
    "finetune": ".finetune",
    "evaluate": ".evaluate",
    "calibrate": ".calibrate",
    "suggest": ".suggest",
    "learn": ".learn",
    "clusters": ".clusters",
    "predict": ".predict",
    "verify": ".verify",
    "export": ".export",
    "dft": ".dft",
    "charges": ".charges",
    "plot": ".plot",
}


class CommandImportError(ImportError):
    """A sub-command's module (or something it imports at the top) cannot be imported: a broken install."""


class UsageError(InputError):
    """A sub-command's arguments do not parse; ``prog`` is the (sub-)command, e.g. ``"bigdens data import"``."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: a usage error is one line (:class:`UsageError`), as the command's other errors."""

    def error(self, message):
        raise UsageError(self.prog, message)


def _import_command(name: str, module: str):
    try:
        return importlib.import_module(module, __name__)
    except Exception as exc:  # ImportError, SyntaxError, an error at import time
        raise CommandImportError(f"the sub-command {name!r} cannot be loaded (module bigdens.cli{module}: "
                                 f"{type(exc).__name__}: {exc}); the installation is broken, reinstall bigdens"
                                 ) from exc


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s sub-commands (``bigdens data``'s info and import), each once."""
    found: dict[int, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                found.setdefault(id(p), p)
    return list(found.values())


def _add_debug(parser: argparse.ArgumentParser) -> None:
    # After the sub-command as well as before it; SUPPRESS keeps a --debug given before it.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors (also accepted before the sub-command)")
    for p in _subparsers(parser):
        _add_debug(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``bigdens`` parser with every sub-command of :data:`COMMANDS`.

    Raises
    ------
    CommandImportError
        A sub-command's module does not import.
    """
    parser = argparse.ArgumentParser(
        prog="bigdens",
        description="Predict Kohn-Sham DFT electron densities with Bayesian uncertainty (units: Å, e/Å³).",
    )
    parser.add_argument("--version", action="version", version=f"bigdens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser,
                                help="the sub-command; `bigdens COMMAND --help` shows its options")
    for name, module in COMMANDS.items():
        mod = _import_command(name, module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        _add_debug(p)
        p.set_defaults(_run=mod.run)
    return parser


#: Signals that stop a command like Ctrl-C: SIGTERM is what ``kill``, ``scancel`` and SLURM preemption send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupted(signum: int, frame) -> None:
    # Once: a second signal while the command shuts down (Ctrl-C pressed again,
    # SIGTERM after SIGINT) must not break the cleanup the first one started.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`~bigdens.errors.Interrupted` in the main thread meanwhile.

    The command then unwinds through its ``finally`` blocks and context
    managers (store locks, temporary files, the Dask cluster) instead of dying
    where it stands.  A signal ignored when this starts stays ignored (as for
    a command started in the background with ``nohup`` or ``&``).  The
    previous handlers come back on exit; elsewhere than in the main thread
    (where Python delivers signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        for sig, handler in before.items():
            if handler is not signal.SIG_IGN:
                signal.signal(sig, _raise_interrupted)
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
    except CommandImportError as exc:
        if "--debug" in argv:
            raise
        print(f"bigdens: error: {exc}", file=sys.stderr)
        return 2
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command is not None:  # argparse would show the top-level usage for these
            raise UsageError(f"bigdens {args.command}", f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as exc:
        if "--debug" in argv:
            raise
        print(f"{exc.prog}: error: {exc}; see `{exc.prog} --help`", file=sys.stderr)
        return 2
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with stop_signals_raise():
            check_output(args)
            return int(args._run(args) or 0)
    except BigdensError as exc:
        if args.debug:
            raise
        print(f"bigdens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:  # Interrupted, or Ctrl-C before the handlers were in place
        name = getattr(exc, "signal", "SIGINT")
        progress = getattr(exc, "progress", None)
        print(f"bigdens {args.command}: interrupted ({name})" + (f": {progress}" if progress else ""),
              file=sys.stderr)
        return 128 + signal.Signals[name].value  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
