"""Figures of the scaling benchmarks, drawn from their JSON results (PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _machine_line(result: dict) -> str:
    m = result["machine"]
    return f"{m['cpu_model']}, {m['cores']} cores, {m.get('memory_gb', '?')} GB; bigdens {m['bigdens']}"


def _save(fig, result: dict, path: Path) -> Path:
    """Title the figure with the machine, write it as PNG and close it."""
    fig.suptitle(_machine_line(result), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def weak_scaling(result: dict, dft: dict | None, path: Path) -> Path:
    """Time and peak memory per worker against atoms (log-log), with DFT where measured.

    Left: wall time of whole predictions, the ideal-linear line through the
    largest one, the labelled extrapolation; if ``dft`` (ml_vs_dft result) is
    given, its DFT core-seconds with their N^p fit and the ML core-seconds on
    the same DFT grids.  Right: peak RSS per worker.
    """
    plt = _pyplot()
    recs = sorted(result["records"], key=lambda r: r["n_atoms"])
    n = np.array([r["n_atoms"] for r in recs], float)
    wall = np.array([r["wall_s"] for r in recs])
    s = result["settings"]
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(11, 4.4))
    ax.loglog(n, wall, "o-", color="C0",
              label=f"bigdens predict, wall ({s['workers']} workers, {s['spacing_A']} Å, S={s['mc_samples']})")
    ax.loglog(n, [r["busy_s"] for r in recs], "s--", color="C0", alpha=0.5, mfc="none",
              label="bigdens, busy time (summed tasks / workers)")
    grid_n = np.geomspace(n.min(), max(n.max(), 4e6), 50)
    ax.loglog(grid_n, wall[-1] * grid_n / n[-1], ":", color="gray", label="ideal linear (through largest)")
    ex = result.get("extrapolation")
    if ex:
        ax.loglog([ex["n_atoms"]], [ex["wall_s"]], "o", mfc="none", color="C0",
                  label=f"{ex['n_atoms']:,} atoms: EXTRAPOLATED, not measured")
    if dft and dft.get("records"):
        d = sorted(dft["records"], key=lambda r: r["n_atoms"])
        dn = np.array([r["n_atoms"] for r in d], float)
        dt = np.array([r["dft"]["core_s"] for r in d])
        ax.loglog(dn, dt, "^", color="C3", ms=8, label="DFT (GPAW, protocol bigdens-dft-v1), core-s")
        p = dft.get("fit", {}).get("dft_exponent_core_s")
        if p:
            xs = np.geomspace(dn.min(), 2e3, 30)
            ax.loglog(xs, dt[0] * (xs / dn[0]) ** p, "-", color="C3", alpha=0.4,
                      label=f"DFT fit ∝ N^{p:.2f} (extrapolated past {int(dn.max())} atoms)")
        ax.loglog(dn, [r["ml_warm"]["core_s"] for r in d], "v", color="C2", ms=8,
                  label="bigdens on the DFT grid, core-s (same run as DFT)")
    fit = result["fit"]
    title = "time vs atoms"
    if fit.get("wall_exponent") is not None:
        title += f": wall ∝ N^{fit['wall_exponent']:.3f} (N ≥ {fit['wall_fit_min_atoms']:,})"
    ax.set(xlabel="atoms", ylabel="seconds", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    rss = [max(r["peak_rss_mb_per_worker"] or [np.nan]) for r in recs]
    axm.semilogx(n, rss, "o-", color="C1", label="peak RSS, largest worker")
    axm.set(xlabel="atoms", ylabel="MB per worker", title="memory per worker", ylim=(0, max(rss) * 1.3))
    axm.grid(True, which="both", alpha=0.3)
    axm.legend(fontsize=8)
    path = _save(fig, result, path)
    plt.close(fig)
    return path


def strong_scaling(result: dict, path: Path) -> Path:
    """Speed-up against workers (local processes) and SLURM jobs, with the ideal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    top = 1
    for kind, style in (("local", "o-"), ("slurm", "s-")):
        recs = sorted((r for r in result["records"] if r["kind"] == kind), key=lambda r: r["workers"])
        if not recs:
            continue
        w = [r["workers"] for r in recs]
        top = max(top, *w)
        label = "LocalCluster processes" if kind == "local" else "SLURM jobs (1 worker each)"
        ax.plot(w, [r["speedup"] for r in recs], style, label=label)
    ax.plot([1, top], [1, top], ":", color="gray", label="ideal")
    cores = result["machine"]["cores"]
    if top > cores:
        ax.axvspan(cores + 0.5, top + 0.5, color="C3", alpha=0.08, label=f"oversubscribed (> {cores} cores)")
    s = result["settings"]
    ax.set(xlabel="workers", ylabel="speed-up (wall, vs 1 worker)",
           title=f"{s['n_atoms']:,} Al atoms, {s['grid_points']:,} points", xticks=range(1, top + 1))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = _save(fig, result, path)
    plt.close(fig)
    return path


def scf_residuals(result: dict, path: Path, *, structure: int = 0) -> Path:
    """pw.x's estimated SCF accuracy (Ry) against iteration for each start of one structure (benchmarks.qe_start)."""
    plt = _pyplot()
    s = result["structures"][structure]
    labels = {"pwx-atomic": "pw.x default (atomic densities)", "bigdens": "bigdens prediction (startingpot='file')",
              "pwx-converged": "pw.x's own converged density (ceiling)"}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for row in s["rows"]:
        acc = row["scf_accuracy_Ry"]
        ax.semilogy(np.arange(1, len(acc) + 1), acc, "o-", ms=3, label=f"{labels.get(row['start'], row['start'])}: "
                                                                        f"{row['scf_iterations']} iterations")
    ax.axhline(s["conv_thr_Ry"], color="grey", lw=0.8, ls="--", label="conv_thr")
    ax.set_xlabel("SCF iteration")
    ax.set_ylabel("estimated SCF accuracy (Ry)")
    ax.set_title(f"{Path(s['structure']).stem}: {s['formula']}, {s['pseudopotential']}, pw.x", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"Quantum ESPRESSO {result['package_version']}, one process", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
