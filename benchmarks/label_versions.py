"""A shipped model's error against a cell's protocol label and against the same cell recomputed with converged
settings: how much of the error was the label's.

For each recomputed density of ``benchmarks/results/label_noise`` (``NAME-VARIANT.npz``, the same structure and
grid as the stored snapshot, :mod:`benchmarks.label_noise`) the shipped model for the cell's species predicts
the cell once (S = 20, the snapshot's block index and bond spread, as ``bigdens evaluate``), and the metrics of
DESIGN §5 are taken against the stored label and against each recomputed one: NMAE, ΔN, 1σ/2σ coverage, ENCE,
rms(err/σ).  Only variants that change the k-mesh, the cutoff, the grid or the tolerance of the protocol are read.

With ``--relabelled DATA... --original DATA...`` the pairs are instead the snapshots of a relabelled
data set (``bigdens data relabel``) and the snapshots of the same names they were relabelled from.

Run:  python -m benchmarks.label_versions [-o benchmarks/results/label_versions.json]
      python -m benchmarks.label_versions --relabelled datasets/al32-v2-test --original datasets/al32 \
          datasets/al32-vacancy -o benchmarks/results/label_versions_v2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._common import write_result
from benchmarks.label_noise import RESULTS, load
from bigdens import data, metrics
from bigdens.bnn import load as load_model
from bigdens.models import shipped_model_for
from bigdens.thermal import bond_spread
from bigdens.train import snapshot_block_index, snapshot_features


def scores(mean, sigma, ref, *, dv: float, n_electrons: float) -> dict:
    """The columns of the table for one reference density (all (n_points,), e/Å³)."""
    err = mean - ref
    return {
        "nmae_pct": metrics.nmae(mean, ref),
        "electron_count_error_pct": metrics.electron_count_error(mean, ref, dv=dv, n_electrons=n_electrons),
        "coverage_1sigma_pct": metrics.coverage(mean, ref, sigma, 1.0),
        "coverage_2sigma_pct": metrics.coverage(mean, ref, sigma, 2.0),
        "ence": metrics.binned_calibration(mean, ref, sigma)["ence"],
        "rms_err_over_sigma": float(np.sqrt(np.mean((err / sigma) ** 2))),
    }


def _label_noise_pairs(directory: Path) -> list[tuple]:
    # (stored snapshot, [(variant, reference density, label NMAE %)]) from the label_noise results.
    by_cell: dict[str, list[tuple[str, dict]]] = {}
    for f in sorted(directory.glob("*.json")):
        r = json.loads(f.read_text())
        if r.get("benchmark") == "label_noise" and r.get("dense_density_file") and r["nmae_pct"] > 0:
            by_cell.setdefault(r["file"], []).append((r.get("variant") or f.stem.split("-")[-1], r))
    return [(load(path), [(name, data.read_snapshot(directory / r["dense_density_file"]).density, r["nmae_pct"])
                          for name, r in variants]) for path, variants in by_cell.items()]


def _relabelled_pairs(relabelled: list[str], original: list[str]) -> list[tuple]:
    # (original snapshot, [(new protocol, its density, label NMAE %)]) for every relabelled snapshot.
    old = {s.name: s for s in data.load(original)}
    pairs = []
    for new in data.load(relabelled):
        src = old[new.name]
        if data.structure_digest(src) != data.structure_digest(new):
            raise SystemExit(f"{new.name}: the relabelled structure is not the original's")
        pairs.append((src, [(str(new.protocol), new.density, metrics.nmae(src.density, new.density))]))
    return pairs


def run(pairs: list[tuple]) -> dict:
    out: dict = {}
    for snap, variants in pairs:
        model_file = shipped_model_for(snap.numbers)
        model = load_model(model_file)
        X, y = snapshot_features(snap, model.params)
        mean, epi, ale = model.predict(X, samples=20, seed=0, block_index=snapshot_block_index(snap),
                                       disorder=bond_spread(snap.positions, snap.numbers, snap.cell))
        mean = mean.astype(np.float64)
        sigma = np.sqrt(epi.astype(np.float64) + ale)
        dv = snap.grid().dv
        row = {"split": snap.split, "protocol": snap.protocol, "model": f"bigdens/models/{model_file.name}",
               "protocol_label": scores(mean, sigma, y.astype(np.float64), dv=dv, n_electrons=snap.n_electrons_expected),
               "recomputed": {}}
        for name, density, label_nmae in variants:
            ref = np.asarray(density, dtype=np.float64).ravel()
            row["recomputed"][name] = dict(scores(mean, sigma, ref, dv=dv, n_electrons=snap.n_electrons_expected),
                                           label_nmae_pct=label_nmae)
        out[snap.name] = row
        print(snap.name, json.dumps({k: round(v, 3) for k, v in row["protocol_label"].items()}), flush=True)
        for name, s in row["recomputed"].items():
            print("   ", name, json.dumps({k: round(v, 3) for k, v in s.items()}), flush=True)
    return {"benchmark": "label_versions", "samples": 20, "cells": out}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--relabelled", nargs="+", help="relabelled data sets (bigdens data relabel)")
    ap.add_argument("--original", nargs="+", help="the data sets they were relabelled from")
    ap.add_argument("-o", "--out", default="benchmarks/results/label_versions.json")
    args = ap.parse_args(argv)
    if bool(args.relabelled) != bool(args.original):
        ap.error("--relabelled and --original go together")
    pairs = (_relabelled_pairs(args.relabelled, args.original) if args.relabelled else _label_noise_pairs(RESULTS))
    return write_result(args.out, run(pairs))


if __name__ == "__main__":
    main()
