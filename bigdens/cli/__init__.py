"""The ``bigdens`` command line.

Each sub-command lives in its own module of this package, exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy packages inside ``run`` only, so ``bigdens --help``
stays fast.
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
from ..errors import BigdensError, Interrupted

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
    "charges": ".charges",
    "plot": ".plot",
}


def _available_commands():
    for name, module in COMMANDS.items():
        try:
            yield name, importlib.import_module(module, __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__name__):
                continue  # a command not built yet
            raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigdens",
        description="Predict Kohn-Sham DFT electron densities with Bayesian uncertainty (units: Å, e/Å³).",
    )
    parser.add_argument("--version", action="version", version=f"bigdens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with stop_signals_raise():
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
