"""What every benchmark shares: machine description, JSON output, the benchmarked Al cells."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

from bigdens import __version__, structure


def machine_info() -> dict:
    """CPU, core count, memory and the versions that set the timings (JSON-ready)."""
    import numba
    import torch

    cpu_model = "?"
    if os.path.exists("/proc/cpuinfo"):
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                          if ln.startswith("model name")), "?")
    mem_gb = None
    if os.path.exists("/proc/meminfo"):
        kb = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
        mem_gb = round(kb / 2**20, 1)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "bigdens": __version__,
    }


def write_result(path: str | Path, result: dict) -> dict:
    """Write a benchmark's JSON result (creating its folder) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def al_bulk(cells: int, *, rattle: float = 0.05, seed: int = 1):
    """Rattled FCC Al of ``cells``³ conventional cells (4·cells³ atoms), rms displacement ``rattle`` Å."""
    return structure.rattle(structure.fcc_al((cells,) * 3), rattle, seed=seed)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``, via ``/proc/self/clear_refs``); False where it cannot.

    Called right before ``engine.run``, so that ``driver_peak_rss_mb`` is the run's own peak (with the
    structure it was given resident), not the building of the structure.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_record(summary, *, workers: int) -> dict:
    """The JSON record of one ``engine.run``: sizes, times, rates, stage split, memory, electrons.

    ``busy_s`` is the summed task time (descriptors + network + write) over
    ``workers``: the run's wall time without cluster start and scheduling.
    ``scheduling_s_per_block`` is the worker time per block spent in neither
    a task's stages nor the cluster start: Dask scheduling, task hand-off,
    the per-process setup and the final checks, shared out over the blocks.
    ``driver_peak_rss_mb`` is this process's peak RSS (the driver, with the
    structure it was given and the Dask scheduler) since the last
    :func:`reset_peak_rss`.
    """
    from bigdens.engine import peak_rss_mb

    st = summary.stage_s
    busy = (st.get("descriptors", 0.0) + st.get("bnn", 0.0) + st.get("write", 0.0)) / workers
    return {
        "n_atoms": summary.n_atoms,
        "grid": list(summary.grid_shape),
        "grid_points": summary.n_points,
        "n_blocks": summary.n_blocks,
        "complete": summary.complete,
        "wall_s": summary.wall_s,
        "busy_s": busy,
        "startup_s": summary.startup_s,
        "overhead_s": summary.wall_s - busy,
        "scheduling_s_per_block": (summary.wall_s - summary.startup_s - busy) * workers / max(summary.n_computed, 1),
        "points_per_s": summary.points_per_s,
        "stage_s": st,
        "peak_rss_mb_per_worker": sorted(summary.max_rss_mb.values()),
        "driver_peak_rss_mb": peak_rss_mb(),
        "n_electrons_expected": summary.n_electrons_expected,
        "n_electrons_predicted": summary.n_electrons_predicted,
        "slurm_jobs": {str(k): v for k, v in summary.slurm_jobs.items() if k is not None},
    }


def fit_exponent(n, t) -> float | None:
    """p of the least-squares line log t = p·log n + c (None with fewer than 2 distinct sizes)."""
    if len(set(n)) < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(t, float)), 1)[0])


def best_of_rounds(timers: dict, rounds: int) -> dict:
    """The smallest of ``rounds`` calls of each timer (a function returning seconds), interleaved round by round."""
    best = {k: float("inf") for k in timers}
    for _ in range(rounds):
        for k, f in timers.items():
            best[k] = min(best[k], f())
    return best
