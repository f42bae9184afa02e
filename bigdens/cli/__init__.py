"""The ``bigdens`` command line.

Each sub-command lives in its own module of this package, exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy packages inside ``run`` only, so ``bigdens --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import BigdensError

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
    "clusters": ".clusters",
    "predict": ".predict",
    "verify": ".verify",
    "export": ".export",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BigdensError as exc:
        if args.debug:
            raise
        print(f"bigdens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"bigdens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
