"""Argument groups and output helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from ..config import DEFAULT_SPACING


class _StdoutLines(logging.Handler):
    # Each record's message alone on standard output, flushed at once: a library progress line reads as
    # the command printed it.  ``sys.stdout`` is looked up per line (it may be replaced meanwhile).
    def __init__(self, before: Callable[[], None] | None) -> None:
        super().__init__(logging.INFO)
        self.before = before

    def emit(self, record: logging.LogRecord) -> None:
        if self.before is not None:
            self.before()
        sys.stdout.write(record.getMessage() + "\n")  # errors (a closed pipe) reach the command as from print
        sys.stdout.flush()


@contextmanager
def progress_lines(*names: str, before: Callable[[], None] | None = None) -> Iterator[None]:
    """Show the INFO progress lines of the loggers ``names`` on standard output while the block runs.

    The library modules log their progress (``logging.getLogger(__name__)``);
    a command shows them as its own output, one message per line, and the
    records do not also travel on to the root logger's handlers meanwhile.
    ``before`` is called before each line (``bigdens datagen`` shows pending
    warnings there).  Levels, handlers and propagation are restored on exit.
    """
    handler = _StdoutLines(before)
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


def add_argument(parser, *names: str, aliases: tuple[str, ...] = (), **kwargs) -> argparse.Action:
    """``parser.add_argument(*names, **kwargs)`` that also accepts the hidden option strings ``aliases``.

    An alias parses like the names (old spellings kept so that existing scripts
    run on) but appears neither in ``--help`` nor in argparse's messages, which
    name ``names`` only.  ``parser`` may be an argument group.
    """
    action = parser.add_argument(*names, *aliases, **kwargs)
    action.option_strings = [s for s in action.option_strings if s not in aliases]  # the parser still maps them
    action.aliases = tuple(aliases)
    return action


def add_output_argument(parser, *, help: str, metavar: str | None = None, required: bool = True,
                        default: str | None = None, aliases: tuple[str, ...] = ()) -> argparse.Action:
    """``-o/--output PATH``: the file or folder a command writes (``aliases``: old spellings, hidden)."""
    return add_argument(parser, "-o", "--output", aliases=aliases, required=required, default=default,
                        metavar=metavar, help=help)


def add_threads_argument(parser) -> argparse.Action:
    """``--threads N``: torch and numba threads of this process (every core when left out)."""
    return parser.add_argument("--threads", type=int, metavar="N",
                               help="torch and numba threads of this process, >= 1 (default: every core)")


def add_device_argument(parser, *, default: str, what: str) -> argparse.Action:
    """``--device {auto,cpu,cuda}`` (:data:`bigdens.config.DEVICES`); ``default`` comes from the config object."""
    from ..config import DEVICES

    return parser.add_argument("--device", choices=DEVICES, default=default,
                               help=f"where {what} runs: auto (CUDA when torch sees a GPU, else the CPU), cpu or "
                                    f"cuda (default {default})")


def config_default(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (a config object), so no literal is repeated."""
    import dataclasses

    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def add_split_argument(parser, *, help: str, default: str | None = None) -> argparse.Action:
    """``--split NAME``: a split name (:data:`bigdens.data.SPLITS`), never fractions."""
    from ..data import SPLITS

    return parser.add_argument("--split", choices=SPLITS, default=default, metavar="SPLIT",
                               help=f"{help}: one of {', '.join(SPLITS)}")


def add_keep_variance_argument(parser, *, help: str, aliases: tuple[str, ...] = ()) -> argparse.Action:
    """``--keep-variance``: keep the model's variance factor, refit only the epistemic reference."""
    return add_argument(parser, "--keep-variance", aliases=aliases, action="store_true", help=help)


def add_frame_argument(parser: argparse.ArgumentParser) -> None:
    """``--frame K``: which frame of a trajectory store a reading command reads."""
    parser.add_argument("--frame", type=int, metavar="K",
                        help="of a trajectory store (predicted with --frames): the K-th frame of the store, 0-based "
                             "(negative counts from the end; the store's 'frame' coordinate gives its index in the "
                             "input file). Required for a trajectory store, refused for a single structure's")


def add_grid_arguments(parser: argparse.ArgumentParser, default: str = f"{DEFAULT_SPACING}") -> None:
    """``--spacing H | --grid N1 N2 N3`` (DESIGN §1); ``default`` describes the spacing used without either."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--spacing", type=float, metavar="H",
                   help=f"grid spacing, Å: the largest allowed along each lattice vector (default {default})")
    g.add_argument("--grid", type=int, nargs=3, metavar=("N1", "N2", "N3"), help="exact grid shape")


def add_structure_arguments(parser: argparse.ArgumentParser) -> None:
    """A structure file readable by ASE, with an optional explicit format."""
    parser.add_argument("structure", help="structure file in any format ASE reads (extxyz, POSCAR, CIF, ...)")
    parser.add_argument("--format", help="ASE format name when it cannot be guessed (e.g. lammps-data)")


def grid_from_args(cell, args: argparse.Namespace):
    """The :class:`~bigdens.grid.Grid` that ``--spacing``/``--grid`` ask for over ``cell``."""
    from ..grid import make_grid

    if args.grid is not None:
        return make_grid(cell, shape=args.grid)
    return make_grid(cell, spacing=DEFAULT_SPACING if args.spacing is None else args.spacing)


def add_cluster_arguments(parser: argparse.ArgumentParser, *, what: str = "blocks") -> None:
    """Where the Dask tasks run: ``--cluster``, ``--scheduler-file``, ``--workers``, ``--threads-per-worker``."""
    parser.add_argument("--cluster", default="local",
                        help="'local' (default: a Dask cluster of processes here) or 'slurm:NAME': SLURM jobs of the "
                             "profile cluster_configs/NAME.yaml or a .yaml path (`bigdens clusters` lists them)")
    parser.add_argument("--scheduler-file", help="join the existing Dask cluster described by this file")
    parser.add_argument("--workers", type=int, default=2,
                        help=f"worker processes of the local cluster (default 2; 0 runs the {what} in this process)")
    parser.add_argument("--threads-per-worker", type=int, metavar="T",
                        help="numba and torch threads per worker (default: the SLURM profile's, else 1)")


def cluster_config(args: argparse.Namespace, *, model):
    """A :class:`~bigdens.config.PredictConfig` naming the cluster of :func:`add_cluster_arguments` (no store)."""
    from ..config import PredictConfig

    return PredictConfig(out="unused.zarr", model=model, cluster=args.cluster, scheduler_file=args.scheduler_file,
                         workers=args.workers, threads_per_worker=args.threads_per_worker,
                         device=getattr(args, "device", config_default(PredictConfig, "device")))


def cost_data_dirs(given: list[str] | None) -> list | None:
    """Data-set folders whose recorded DFT timings fit the cost model: ``--cost-data``; None (the timings shipped
    with bigdens, :data:`bigdens.active.cost.SHIPPED_RECORDS`) when it is not given."""
    from pathlib import Path

    from ..errors import InputError

    if not given:
        return None
    for d in given:
        if not (Path(d) / "dataset.json").is_file():
            raise InputError(f"--cost-data {d!r} is not a bigdens data set (no dataset.json in it)")
    return [Path(d) for d in given]


#: Commands whose -o/--output is a store they write (``predict`` resumes or overwrites one there).
STORE_WRITERS = frozenset({"predict"})


def _inputs(args: argparse.Namespace) -> list[str]:
    # Every argument value (or list item) other than the output that names an existing file or folder.
    import os

    found = []
    for key, value in vars(args).items():
        if key in ("output", "_run", "command") or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, str) and item and os.path.exists(item):
                found.append(item)
    return found


def check_output(args: argparse.Namespace) -> None:
    """Refuse an ``-o/--output`` that would destroy something: an input, or part of a bigdens store.

    - No path inside an existing bigdens store (its ``zarr.json``, an array, the ledger): nothing is written
      inside a store but by the engine.
    - No existing bigdens store as the output of a command that does not write stores (``data import``,
      ``export``, ...); ``predict`` writes, resumes or overwrites its own store there.
    - No input file given to the same command, whatever the path's spelling (symbolic links, ``./``); an
      existing folder as the output is left to the command (each says what it writes there).

    Symbolic links are resolved first, so a link to a store counts as the store.

    Raises
    ------
    SetupError
        One line naming the path, what it would destroy and what to do.
    """
    import os
    from pathlib import Path

    from ..errors import SetupError
    from ..store import read_attrs

    output = getattr(args, "output", None)
    if not isinstance(output, str) or not output:
        return
    real = Path(os.path.realpath(output))
    for parent in real.parents:
        if read_attrs(parent) is not None:
            raise SetupError(f"{output!r} lies inside the bigdens store '{parent}'; nothing is written inside a store "
                             "but by `bigdens predict`: choose a path outside it")
    if args.command not in STORE_WRITERS and read_attrs(real) is not None:
        raise SetupError(f"{output!r} is a bigdens store, which `bigdens {args.command}` would overwrite; choose "
                         "another -o/--output")
    if real.is_file():  # a folder given as an output: each command says what it writes there
        for item in _inputs(args):
            try:
                same = os.path.samefile(item, real)
            except OSError:
                continue
            if same:
                raise SetupError(f"the output {output!r} is also an input of this command ({item!r}); writing it "
                                 "would destroy that input: choose another -o/--output")
