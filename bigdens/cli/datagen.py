"""``bigdens datagen``: thermalize structures and compute DFT densities (resumable).

Examples::

    bigdens datagen al --cells 2 2 2 --temperatures 300 600 900 1400 --melt-above 1400 \\
        --snapshots-per-temperature 10 -o datasets/al32
    bigdens datagen sige --x 0 0.25 0.5 0.75 1 --cells 2 2 2 --temperatures 300 600 900 \\
        --snapshots-per-temperature 2 -o datasets/sige64

Rerunning the same command on the same directory resumes it.

DFT protocol (``--protocol``)
-----------------------------
A new data set gets protocol ``bigdens-dft-v2`` unless ``--protocol v1`` is
given: v2 has v1's physics with converged numerical settings
(:data:`bigdens.datagen.PROTOCOLS`, docs/data.md "Protocols"), so it is what
new training data should use.  Without ``--protocol``, a rerun on an existing
data set resumes it in *its own* protocol (the registered protocol that, with
the given ``--kpts``/``--gpts``, gives the protocol its manifest or plan.json
records): "rerun the same command to resume" keeps working for data sets
started before v2 existed, instead of failing on a default that changed under
them.  An explicit ``--protocol`` that differs from the data set's is refused
unless ``--allow-mixed-protocols``.  Either way the run's first line names the
protocol and its settings, and the protocol is recorded in ``plan.json``, the
manifest and every snapshot's provenance.  (The library's own default,
``bigdens.datagen.generate(dft=DFTSettings())``, stays v1.)
"""

from __future__ import annotations

import argparse

#: Default split fractions (train, validation, test).
SPLIT = (0.7, 0.15, 0.15)

HELP = "make a DFT density data set: Langevin thermalization, snapshots, GPAW single points (resumable)"

#: Settings fields (:mod:`bigdens.datagen.settings`; ``protocol``: a protocol name, the ``setting`` of
#: :func:`~bigdens.datagen.protocol_name`'s error) -> the option that sets them, named in error messages.
FLAGS = {"timestep_fs": "--timestep", "equilibration_ps": "--equilibration", "interval_ps": "--interval",
         "melt_temperature_K": "--melt-temperature", "kpts": "--kpts", "gpts": "--gpts", "protocol": "--protocol"}


def settings_from_flags(cls, **values):
    """``cls(**values)`` (a settings class of :mod:`bigdens.datagen.settings`); its errors name the option.

    Raises
    ------
    InputError
        ``"MDSettings.timestep_fs (--timestep) must be a positive number, got 0.0"``: the
        settings' own message with the option of :data:`FLAGS` that set the field.
    """
    from ..errors import InputError

    try:
        return cls(**values)
    except InputError as exc:
        name = getattr(exc, "setting", None)
        if name not in FLAGS:
            raise
        raise InputError(f"{cls.__name__}.{name} ({FLAGS[name]}) {exc.problem}") from None


def dft_settings_from_flags(protocol: str | None, *, kpts, gpts, output=None):
    """The DFT settings of ``--protocol``, ``--kpts`` and ``--gpts`` (see the module docstring).

    ``protocol`` None: the protocol of the data set in ``output`` being resumed,
    else :data:`~bigdens.datagen.RECOMMENDED_PROTOCOL` (v2).  ``--kpts`` or
    ``--gpts`` override the protocol's rule and so make a custom protocol.

    Raises
    ------
    InputError
        ``"--protocol 'v3' is unknown; known protocols: v1 (bigdens-dft-v1), v2 (bigdens-dft-v2)"``,
        or a bad ``--kpts``/``--gpts`` (named as :func:`settings_from_flags` names them).
    """
    from dataclasses import asdict

    from ..datagen import PROTOCOLS, RECOMMENDED_PROTOCOL, DFTSettings, protocol_name, recorded_protocol
    from ..errors import InputError

    overrides = {"kpts": tuple(kpts) if kpts else None, "gpts": tuple(gpts) if gpts else None}

    def settings(name: str) -> "DFTSettings":
        return settings_from_flags(DFTSettings, **dict(asdict(PROTOCOLS[name]), **overrides))

    if protocol is not None:
        try:
            return settings(protocol_name(protocol))
        except InputError as exc:
            if getattr(exc, "setting", None) != "protocol":
                raise
            raise InputError(f"{FLAGS['protocol']} {protocol!r} {exc.problem}") from None
    have = recorded_protocol(output) if output is not None else None
    for name in PROTOCOLS:
        if have is not None and settings(name).protocol == have:
            return settings(name)
    return settings(RECOMMENDED_PROTOCOL)


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """The starting structures and their thermalization (shared with `bigdens suggest`'s generators)."""
    parser.add_argument("--cells", type=int, nargs=3, default=[1, 1, 1], metavar=("N1", "N2", "N3"),
                        help="conventional cubic cells along each axis (Al: 4 atoms each, SiGe: 8)")
    parser.add_argument("--x", type=float, nargs="+", metavar="X", help="Ge fraction(s) for sige, each in [0, 1]")
    parser.add_argument("--vacancies", type=int, default=0, metavar="K", help="remove K random atoms (seeded)")
    parser.add_argument("--void", type=float, metavar="R", help="then remove the atoms within R Å of the cell centre")
    parser.add_argument("--temperatures", type=float, nargs="+", required=True, metavar="K",
                        help="thermostat temperatures, K (> 0)")
    parser.add_argument("--snapshots-per-temperature", type=int, default=1, metavar="N",
                        help="snapshots per structure and temperature (one MD trajectory each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of alloy sites, vacancies, MD and splits")
    md = parser.add_argument_group("thermalization")
    md.add_argument("--timestep", type=float, default=1.0, metavar="FS", help="MD time step, fs (default 1)")
    md.add_argument("--equilibration", type=float, default=2.0, metavar="PS",
                    help="MD time before the first snapshot, ps (default 2)")
    md.add_argument("--interval", type=float, default=0.5, metavar="PS",
                    help="MD time between snapshots, ps (default 0.5)")
    md.add_argument("--melt-above", type=float, metavar="K",
                    help="temperatures >= K start from a melt at --melt-temperature (liquid snapshots)")
    md.add_argument("--melt-temperature", type=float, default=2500.0, metavar="K", help="melt temperature, K")
    md.add_argument("--potential", choices=["auto", "emt", "tersoff-sige"], default="auto",
                    help="classical potential of the MD (auto: EMT for Al, Tersoff for Si/Ge)")


def check_generator_arguments(args: argparse.Namespace):
    """Validate the generator flags; returns the MD settings."""
    from ..datagen import MDSettings, check_temperatures
    from ..errors import InputError

    check_temperatures(args.temperatures)
    if args.snapshots_per_temperature < 1:
        raise InputError(f"--snapshots-per-temperature must be >= 1, got {args.snapshots_per_temperature}")
    if args.seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {args.seed}")
    if args.void is not None and not args.void > 0:
        raise InputError(f"--void must be a radius > 0 Å, got {args.void}")
    return settings_from_flags(MDSettings, timestep_fs=args.timestep, equilibration_ps=args.equilibration,
                               interval_ps=args.interval, melt_above_K=args.melt_above,
                               melt_temperature_K=args.melt_temperature, potential=args.potential)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_argument

    parser.add_argument("system", help="'al', 'sige', or a structure file in any format ASE reads")
    parser.add_argument("--format", help="ASE format of the structure file when it cannot be guessed")
    add_generator_arguments(parser)
    add_argument(parser, "--split-fractions", aliases=("--split",), nargs=3, type=float,
                 metavar=("TRAIN", "VALIDATION", "TEST"),
                 help=f"fractions of the snapshots in the train, validation and test splits (default "
                      f"{' '.join(map(str, SPLIT))})")
    parser.add_argument("--all-test", action="store_true", help="put every snapshot in the test split")
    dft = parser.add_argument_group("DFT (protocol bigdens-dft-v2 unless told otherwise; docs/data.md, Protocols)")
    dft.add_argument("--protocol", metavar="{v1,v2}",
                     help="DFT protocol: v2 (bigdens-dft-v2, converged settings; the default for a new data set) or "
                          "v1 (bigdens-dft-v1, the shipped data sets); full names accepted. Default when -o is a data "
                          "set being resumed: its own protocol")
    dft.add_argument("--allow-mixed-protocols", action="store_true",
                     help="add snapshots of --protocol to a data set (-o) of another protocol (its manifest's "
                          "protocol becomes 'mixed')")
    dft.add_argument("--kpts", type=int, nargs=3, metavar=("K1", "K2", "K3"),
                     help="fixed k-point mesh (makes a custom protocol; default: the protocol's ceil(L/|a_i|))")
    dft.add_argument("--gpts", type=int, nargs=3, metavar=("N1", "N2", "N3"),
                     help="fixed grid shape (makes a custom protocol; default: the protocol's M*ceil(|a_i|/h))")
    parser.add_argument("--max-snapshots", type=int, metavar="N", help="stop after N new snapshots")
    parser.add_argument("--log-dir", metavar="DIR", help="write GPAW's text log of each snapshot here")
    parser.add_argument("--description", default="", help="free text for the manifest")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="data-set directory (created/resumed)")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path

    from ..datagen import assign_splits, build_variants, check_requirements, check_temperatures, generate, make_plan
    from ..errors import InputError

    md = check_generator_arguments(args)
    temps = check_temperatures(args.temperatures)
    if args.max_snapshots is not None and args.max_snapshots < 0:
        raise InputError(f"--max-snapshots must be >= 0 (0: write the plan only), got {args.max_snapshots}")
    if args.all_test and args.split_fractions is not None:
        raise InputError("--all-test and --split-fractions exclude each other: --all-test puts every snapshot in "
                         "the test split (the same as --split-fractions 0 0 1)")
    if args.log_dir is not None and not Path(args.log_dir).is_dir():
        what = "is not a folder" if Path(args.log_dir).exists() else "does not exist"
        raise InputError(f"--log-dir {args.log_dir!r} {what}; give an existing folder for GPAW's logs")
    system = args.system
    structure_file = None
    if system not in ("al", "sige"):
        structure_file, system = system, "file"
        if Path(structure_file).is_dir():
            raise InputError(f"system {args.system!r} is a directory; give 'al', 'sige' or a structure file")
        if not Path(structure_file).is_file():
            raise InputError(f"system must be 'al', 'sige' or an existing structure file, got {args.system!r}")
    dft = dft_settings_from_flags(args.protocol, kpts=args.kpts, gpts=args.gpts)  # bad flags first, then -o
    fractions = (0.0, 0.0, 1.0) if args.all_test else tuple(args.split_fractions or SPLIT)
    assign_splits([], fractions=fractions, seed=args.seed)  # fail now, not after the MD, on bad fractions
    out = Path(args.output).absolute()
    there = next(p for p in (out, *out.parents) if p.exists())
    if not there.is_dir():
        raise InputError(f"-o {args.output!r}: {str(there)!r} exists and is not a folder; choose another -o")
    if args.protocol is None:  # resuming a data set: its own protocol (module docstring)
        dft = dft_settings_from_flags(None, kpts=args.kpts, gpts=args.gpts, output=out)
    with warnings.catch_warnings(record=True) as notes:  # shown with the first line of progress (say)
        warnings.simplefilter("always")
        variants, info = build_variants(system, cells=args.cells, x_values=args.x, vacancies=args.vacancies,
                                        void=args.void, seed=args.seed, structure_file=structure_file,
                                        structure_format=args.format)

    def show_notes() -> None:
        # The notes on the structure (one line each, as `bigdens predict` shows them) come with the first
        # progress line, once the run is under way, so that a refused run shows only its error.
        while notes:
            print(f"bigdens datagen: warning: {notes.pop(0).message}", file=sys.stderr)
    for atoms in variants.values():  # fail now, not after the MD or in a new -o folder, on bad structures
        from ..chemistry import hgh_valence
        from ..structure import validate

        validate(atoms)
        hgh_valence(atoms.numbers)
    check_requirements(variants, md=md)  # GPAW (and matscipy) before the MD, not after it
    from dataclasses import asdict

    request = {
        "system": args.system, "cells": list(args.cells), "x": args.x, "vacancies": args.vacancies,
        **({"void": args.void} if args.void else {}),
        "temperatures": list(temps), "snapshots_per_temperature": args.snapshots_per_temperature,
        "seed": args.seed, "split_fractions": list(fractions), "md": asdict(md),
    }

    def plan():
        return make_plan(variants, temperatures=temps, snapshots_per_temperature=args.snapshots_per_temperature,
                         md=md, seed=args.seed, split_fractions=fractions, variant_info=info)

    from ._common import progress_lines

    with progress_lines("bigdens.datagen", before=show_notes):  # the MD, plan and DFT lines, on stdout
        out = generate(args.output, plan, request=request, dft=dft, description=args.description,
                       max_snapshots=args.max_snapshots, log_dir=args.log_dir,
                       allow_mixed_protocols=args.allow_mixed_protocols)
    print(f"data set {str(out)!r} is up to date")
    return 0
