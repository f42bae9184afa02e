"""``bigdens data``: inspect data sets and import density files into one.

Examples::

    bigdens data info datasets/al32
    bigdens data info datasets/al32 --json
    bigdens data import run1/CHGCAR run2/CHGCAR -o datasets/my-vasp --split test
    bigdens data import si.rho.xsf -o datasets/my-qe   # Quantum ESPRESSO pp.x output
    bigdens data relabel datasets/al32 --split test --protocol v2 -o datasets/al32-v2-test
"""

from __future__ import annotations

import argparse
import json

#: Default of --allow-negative (bigdens.data.NEGATIVE_TOLERANCE, repeated so that --help imports no numpy).
NEGATIVE_TOLERANCE = 1e-3

HELP = ("inspect a DFT density data set (info), import cube/CHGCAR/.gpw/XSF files into one (import), or compute "
        "its cells again under another DFT protocol (relabel)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_output_argument, add_split_argument

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                                help="info, import or relabel; `bigdens data ACTION --help` shows its options")
    info = sub.add_parser("info", help="snapshots, sizes, temperatures, electron integrals, DFT cost",
                          description="Summarise data sets or density files.")
    info.add_argument("paths", nargs="+", metavar="PATH", help="data-set directories or density files")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--snapshots", action="store_true", help="list every snapshot")
    imp = sub.add_parser("import", help="convert cube / CHGCAR / .gpw / XSF files into a bigdens data set",
                         description="Convert density files (Gaussian cube, VASP CHGCAR, GPAW .gpw, XSF with a "
                                     "DATAGRID_3D such as Quantum ESPRESSO's pp.x writes) into a "
                                     "bigdens data set (created, or extended when it exists).")
    imp.add_argument("files", nargs="+", metavar="FILE", help="density files")
    add_output_argument(imp, metavar="DATASET", help="data-set directory (created, or extended when it exists)")
    add_split_argument(imp, default="train", help="split of the imported snapshots (default train)")
    imp.add_argument("--cube-units", choices=["e/bohr^3", "e/A^3"], default="e/bohr^3",
                     help="units of cube values (standard: e/bohr^3; ASE-written GPAW densities: e/A^3)")
    imp.add_argument("--xsf-units", choices=["e/bohr^3", "e/A^3"], default="e/bohr^3",
                     help="units of XSF grid values (Quantum ESPRESSO pp.x: e/bohr^3, the default)")
    imp.add_argument("--temperature", type=float, metavar="K", help="temperature to record, K")
    imp.add_argument("--allow-mixed-protocols", action="store_true",
                     help="accept files of different sources or settings in one data set")
    imp.add_argument("--allow-negative", type=float, default=NEGATIVE_TOLERANCE, metavar="FRACTION",
                     help="largest share of the electrons that may sit in negative density values, in [0, 1) "
                          f"(default {NEGATIVE_TOLERANCE}). Densities that cannot be physical are refused: a "
                          "singular cell (zero or degenerate voxel vectors), NaN/inf values, all values <= 0, or "
                          "an electron integral <= 0. PAW pseudo-densities (VASP CHGCAR) can dip below zero near "
                          "the cores: raise this, e.g. --allow-negative 0.02, to import them")
    imp.add_argument("--allow-electron-mismatch", action="store_true",
                     help="import a density whose electron integral is more than 5 %% off the valence count of its "
                          "atoms in the HGH setups bigdens learns (refused by default: other pseudopotentials, "
                          "units or structure)")


    rel = sub.add_parser("relabel", help="compute snapshots again under another DFT protocol (same structures, "
                                         "names and splits; needs the dft extra)",
                         description="Compute the DFT of existing snapshots again with another protocol's settings "
                                     "(docs/data.md, Protocols): the same cells, positions, names, splits and "
                                     "temperatures. Resumable: rerun the same command to continue.")
    rel.add_argument("paths", nargs="+", metavar="DATA", help="data-set directories and/or snapshot files")
    add_split_argument(rel, help="only snapshots of this split")
    rel.add_argument("--protocol", default="v2", metavar="{v1,v2}", help="the protocol of the new labels (default v2)")
    rel.add_argument("--max-snapshots", type=int, metavar="N", help="stop after N new snapshots")
    rel.add_argument("--log-dir", metavar="DIR", help="folder for GPAW's text logs (one per snapshot)")
    rel.add_argument("--allow-mixed-protocols", action="store_true",
                     help="accept input snapshots made with different DFT settings")
    add_output_argument(rel, metavar="DATASET", help="data-set directory of the new labels (created or resumed)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "info":
        return _info(args)
    if args.data_command == "relabel":
        return _relabel(args)
    return _import(args)


def _relabel(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data import load
    from .._imports import attempt_import
    from ..datagen import relabel
    from ..errors import InputError
    from ._common import progress_lines
    from .datagen import dft_settings_from_flags

    if args.max_snapshots is not None and args.max_snapshots < 0:
        raise InputError(f"--max-snapshots must be >= 0 (0: write the plan only), got {args.max_snapshots}")
    if args.log_dir is not None and not Path(args.log_dir).is_dir():
        raise InputError(f"--log-dir {args.log_dir!r} is not an existing folder; give one for GPAW's logs")
    dft = dft_settings_from_flags(args.protocol, kpts=None, gpts=None)
    snaps = load(args.paths, split=args.split, allow_mixed_protocols=args.allow_mixed_protocols)
    if not snaps:
        raise InputError(f"no snapshots{' of split ' + repr(args.split) if args.split else ''} in {args.paths}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {args.output!r} exists and is not a folder; choose another -o")
    if any(out.resolve() == Path(p).resolve() for p in args.paths):
        raise InputError(f"-o {args.output!r} is one of the inputs: write the new labels to another folder")
    attempt_import("gpaw", purpose="computing DFT densities (bigdens data relabel)")
    with progress_lines("bigdens.datagen"):
        relabel(snaps, out, dft=dft, max_snapshots=args.max_snapshots, log_dir=args.log_dir)
    return 0


def summarize(path) -> dict:
    """A JSON-compatible summary of a data-set directory or density file."""
    from pathlib import Path

    import numpy as np

    from ..data import MANIFEST, load, read_manifest

    path = Path(path)
    manifest = read_manifest(path) if path.is_dir() else None
    snaps = load([path], allow_mixed_protocols=True)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else path.stat().st_size
    entries = {e["name"]: e for e in (manifest or {}).get("snapshots", [])}
    rows = []
    for s in snaps:
        e = entries.get(s.name, {})
        timing = s.provenance.get("timing", {})
        rows.append({
            "name": s.name,
            "split": s.split,
            "temperature": s.temperature if s.temperature is not None else e.get("temperature"),
            "n_atoms": int(len(s.numbers)),
            "formula": s.atoms().get_chemical_formula(),
            "grid_shape": list(s.density.shape),
            "electron_integral": s.electron_integral,
            "n_electrons_expected": s.n_electrons_expected,
            "dft_core_seconds": timing.get("core_seconds"),
            "dft_wall_seconds": timing.get("wall_seconds"),
            "file_bytes": (path / e["file"]).stat().st_size if e else None,
            "protocol": s.protocol,
        })
    splits = {k: sum(r["split"] == k for r in rows) for k in ("train", "validation", "test")}
    temps: dict[str, int] = {}
    for r in rows:
        key = "unknown" if r["temperature"] is None else f"{r['temperature']:g}"
        temps[key] = temps.get(key, 0) + 1
    dev = [abs(r["electron_integral"] - r["n_electrons_expected"]) / r["n_electrons_expected"] for r in rows]
    core = [r["dft_core_seconds"] for r in rows if r["dft_core_seconds"] is not None]
    first = snaps[0].provenance if snaps else {}
    return {
        "path": str(path),
        "kind": "dataset" if manifest else "file",
        "format_version": manifest.get("format_version") if manifest else None,
        "description": manifest.get("description") if manifest else None,
        "protocols": sorted({str(r["protocol"]) for r in rows}),
        "n_snapshots": len(rows),
        "splits": splits,
        "temperatures": temps,
        "bytes_on_disk": size,
        "density_bytes_in_memory": int(sum(s.density.nbytes for s in snaps)),
        "max_relative_electron_error": max(dev) if dev else None,
        "dft_core_seconds_total": float(np.sum(core)) if core else None,
        "dft": {k: first.get(k) for k in ("code", "code_version", "settings") if k in first},
        "thermalization": {k: v for k, v in first.get("thermalization", {}).items()
                           if k in ("method", "potential", "timestep_fs", "friction_per_fs", "equilibration_ps",
                                    "interval_ps")},
        "snapshots": rows,
        "manifest": MANIFEST if manifest else None,
    }


def _info(args: argparse.Namespace) -> int:
    summaries = [summarize(p) for p in args.paths]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=1))
        return 0
    for s in summaries:
        print(f"{s['path']}: {s['kind']}, {s['n_snapshots']} snapshot(s), {s['bytes_on_disk'] / 1e6:.1f} MB on disk")
        if s["description"]:
            print(f"  description: {s['description']}")
        print(f"  protocol(s): {', '.join(s['protocols'])}")
        print("  splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()))
        print("  temperatures (K): " + ", ".join(f"{k}: {v}" for k, v in s["temperatures"].items()))
        if s["dft"]:
            st = s["dft"].get("settings") or {}
            print(f"  DFT: {s['dft'].get('code')} {s['dft'].get('code_version')}; "
                  + ", ".join(f"{k}={v}" for k, v in st.items() if k in ("mode", "ecut_eV", "xc", "setups")))
        if s["thermalization"]:
            t = s["thermalization"]
            print(f"  thermalization: {t.get('method')}; {t.get('potential')}; dt {t.get('timestep_fs')} fs")
        if s["max_relative_electron_error"] is not None:
            print(f"  electron integrals: max relative deviation {s['max_relative_electron_error']:.2e}")
        if s["dft_core_seconds_total"] is not None:
            print(f"  DFT cost: {s['dft_core_seconds_total']:.0f} core-seconds "
                  f"({s['dft_core_seconds_total'] / 3600:.2f} core-hours)")
        rows = s["snapshots"]
        natoms = sorted({r["n_atoms"] for r in rows})
        shapes = sorted({tuple(r["grid_shape"]) for r in rows})
        print(f"  atoms per snapshot: {natoms}; grid shapes: {[list(x) for x in shapes]}")
        if args.snapshots:
            print(f"  {'name':28s} {'split':10s} {'T/K':>6s} {'atoms':>5s} {'grid':>12s} {'electrons':>12s} "
                  f"{'core-s':>8s}")
            for r in rows:
                t = "-" if r["temperature"] is None else f"{r['temperature']:g}"
                c = "-" if r["dft_core_seconds"] is None else f"{r['dft_core_seconds']:.0f}"
                g = "x".join(str(n) for n in r["grid_shape"])
                print(f"  {r['name']:28s} {r['split']:10s} {t:>6s} {r['n_atoms']:5d} {g:>12s} "
                      f"{r['electron_integral']:12.5f} {c:>8s}")
    return 0


def _import(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from ..data import (MANIFEST, VALENCE_TOLERANCE, Snapshot, add_snapshot, check_physical, check_valence,
                        new_manifest, read_manifest)
    from ..errors import InputError
    from ..io import guess_format, read_density_file

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{str(out)!r} exists and is not a directory")
    t = args.temperature
    if t is not None and not (math.isfinite(t) and t > 0):
        raise InputError(f"--temperature must be > 0 K, got {t!r}; e.g. --temperature 300")
    neg = args.allow_negative
    if not 0.0 <= neg < 1.0:  # also NaN
        raise InputError(f"--allow-negative must be a fraction of the electrons within [0, 1), got {neg!r}; "
                         f"e.g. --allow-negative 0.02")
    # Read (and check) every file before writing anything.
    snaps = []
    names = set()
    for f in args.files:
        if Path(f).is_dir() or Path(f).suffix == ".npz":
            what = "a directory" if Path(f).is_dir() else "a bigdens snapshot already"
            raise InputError(f"{f!r} is {what}: data import converts density files (cube, CHGCAR, .gpw, "
                             "XSF); train, evaluate and calibrate read data sets and snapshots as they are")
        fmt = guess_format(f)
        if fmt == "cube":
            from ..io.cube import read_cube

            if not Path(f).is_file():
                raise InputError(f"density file {f!r} does not exist")
            dens = read_cube(f, density_units=args.cube_units)
        elif fmt == "xsf":
            from ..io.xsf import read_xsf

            if not Path(f).is_file():
                raise InputError(f"density file {f!r} does not exist")
            dens = read_xsf(f, density_units=args.xsf_units)
        else:
            dens = read_density_file(f, format=fmt)
        check_physical(dens.cell, dens.density, where=f"density file {f!r}", allow_negative=neg)
        check_valence(dens.numbers, dens.cell, dens.density, where=f"density file {f!r}",
                      tolerance=None if args.allow_electron_mismatch else VALENCE_TOLERANCE)
        name = Path(f).name.replace(".", "_")
        if name in names:  # e.g. run1/CHGCAR and run2/CHGCAR
            name = f"{Path(f).parent.name}_{name}"
        if name in names:
            raise InputError(f"two input files would get the same snapshot name {name!r}; rename one")
        names.add(name)
        prov = dict(dens.provenance)
        if args.temperature is not None:
            prov["temperature_K"] = args.temperature
        snaps.append(Snapshot(name=name, cell=dens.cell, positions=dens.positions, numbers=dens.numbers,
                              density=dens.density.astype("float32"), split=args.split, provenance=prov))
    protocols = sorted({str(s.protocol) for s in snaps})
    manifest = read_manifest(out) if (out / MANIFEST).is_file() else None
    if manifest is not None:
        protocols = sorted(set(protocols) | {str(manifest.get("protocol"))})
    if len(protocols) > 1 and not args.allow_mixed_protocols:
        raise InputError(
            f"these densities come from {len(protocols)} protocols/sources ({', '.join(protocols)}); "
            "import them into separate data sets, or pass --allow-mixed-protocols"
        )
    out.mkdir(parents=True, exist_ok=True)
    if manifest is None:
        manifest = new_manifest(protocol=protocols[0] if len(protocols) == 1 else "mixed",
                                description=f"imported with 'bigdens data import' from {len(snaps)} file(s)")
    elif len(protocols) > 1:
        manifest["protocol"] = "mixed"
    for s in snaps:
        manifest = add_snapshot(out, s, manifest=manifest, allow_mixed_protocols=args.allow_mixed_protocols)
        print(f"imported {s.provenance['source_file']} as {s.name} ({len(s.numbers)} atoms, grid "
              f"{'x'.join(map(str, s.density.shape))}, {s.electron_integral:.4f} electrons)")
    print(f"data set {str(out)!r}: {len(manifest['snapshots'])} snapshot(s)")
    return 0
