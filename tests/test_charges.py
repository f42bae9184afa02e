"""Per-atom charges (bigdens.charges): Voronoi assignment, per-sample error bars, conservation, resume, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from bigdens import charges, descriptors, engine, store, structure
from bigdens.bnn import load
from bigdens.config import PredictConfig

from bruteforce import voronoi_owner
from helpers import config, make_model, variables

SHIPPED = Path(charges.__file__).parent / "models" / "al.safetensors"


def _stored(path):
    root = zarr.open_group(str(path), mode="r")
    return np.asarray(root["charge"][:]), np.asarray(root["charge_std"][:])


def _integral(path):
    attrs = store.read_attrs(path)
    return float(variables(path)["density"].astype(np.float64).sum()) * attrs["volume_element"]


def test_charges_sum_to_the_stored_density_also_renormalized(tmp_path):
    """Shipped Al model, 32 rattled atoms: Σ charges = ∫ stored density to 1e-6, before and after --renormalize."""
    from bigdens.models import shipped_model_for

    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=5)
    shipped_model_for(atoms.numbers)
    out = tmp_path / "al.zarr"
    cfg = dict(out=out, workers=0, mc_samples=4, block=24, progress=False)
    got = engine.run(atoms, PredictConfig(**cfg))
    assert got.complete and got.n_blocks == 8
    q, s = _stored(out)
    assert q.shape == s.shape == (32,) and (s > 0).all()
    assert q.sum() == pytest.approx(_integral(out), rel=1e-6)
    assert store.read_attrs(out)["charges"]["n_electrons"] == pytest.approx(q.sum(), rel=1e-12)
    assert f"per-atom charges (Voronoi): sum {q.sum():.4f} e" in got.format()
    # Bulk Al: about 3 valence electrons per atom, and the model's σ far below that.
    assert np.all(np.abs(q - 3) < 0.5) and s.max() < 0.2
    # Renormalizing the finished store scales the charges with the density (σ stays, as density_std does).
    again = engine.run(atoms, PredictConfig(**cfg, resume=True, renormalize=True))
    f = again.renormalization_factor
    assert f is not None and f != 1.0
    q2, s2 = _stored(out)
    assert q2.sum() == pytest.approx(_integral(out), rel=1e-6)
    assert q2.sum() == pytest.approx(96.0, rel=1e-6)
    np.testing.assert_allclose(q2, q * f, rtol=1e-12)
    assert np.array_equal(s2, s)
    assert store.verify(out).ok


def test_voronoi_assignment_equals_brute_force_on_a_triclinic_cell(rng):
    from bigdens.blocks import make_blocks
    from bigdens.celllist import cell_list_from_fractional, fractional
    from bigdens.grid import Grid

    cell = np.array([[5.2, 0.0, 0.0], [1.7, 4.6, 0.0], [-0.9, 1.3, 4.4]])
    frac = rng.uniform(0, 1, size=(9, 3))
    positions = frac @ cell
    numbers = np.full(9, 13)
    grid = Grid(cell=cell, shape=(13, 11, 12))
    cl = cell_list_from_fractional(cell, fractional(cell, positions))
    points = grid.points()
    want, dist = voronoi_owner(points, positions, cell)
    d_all = np.stack([voronoi_owner(points, positions[[a]], cell)[1] for a in range(9)], axis=1)
    second = np.sort(d_all, axis=1)[:, 1]
    got = np.empty(grid.n_points, dtype=np.int64)
    for radius in (None, 0.3):  # 0.3 Å: the halo must widen several times
        for b in make_blocks(grid.shape, (5, 4, 12)):
            owners, labels = charges.assign_block(cl, numbers, grid, b, radius=radius)
            assert np.array_equal(owners, np.unique(owners)) and labels.max() == len(owners) - 1
            idx = np.ravel_multi_index(np.meshgrid(*[np.arange(a, z) for a, z in zip(b.start, b.stop)],
                                                   indexing="ij"), grid.shape).ravel()
            got[idx] = owners[labels]
        differ = got != want
        # Only a tie (two atoms equally near up to rounding) may go either way.
        assert np.all(second[differ] - dist[differ] < 1e-9)
        assert differ.sum() == 0
    assert len(np.unique(want)) == 9


@pytest.mark.parametrize("kind", ["mean-field", "shipped-last-layer"])
def test_charge_std_equals_spread_of_per_sample_field_charges(tmp_path, kind):
    """σ of the stored charges = the spread over s of the charges of the per-sample fields, built point by point."""
    from bigdens.grid import Grid

    atoms = structure.rattle(structure.fcc_al((1, 1, 1)), 0.08, seed=3)
    model = make_model(tmp_path / "m.safetensors") if kind == "mean-field" else SHIPPED
    out = tmp_path / "o.zarr"
    cfg = config(out, model, spacing=0.45, block=4, mc_samples=6, domain_check=False)
    engine.run(atoms, cfg)
    attrs = store.read_attrs(out)
    grid = Grid(cell=np.asarray(attrs["cell"]), shape=tuple(attrs["grid_shape"]))
    stored = variables(out)
    m = load(model)
    samples = np.zeros((cfg.mc_samples,) + grid.shape)  # the per-sample fields ρ̄ + w·(ρ_s − ρ̄)
    for b in store.blocks_of(attrs):
        feats = descriptors.compute(atoms.positions, atoms.numbers, atoms.cell[:], grid.points(b.start, b.stop),
                                    m.params)
        n = len(feats)
        mean, epi, _, dev = m.predict_grouped(feats, np.arange(n), n, samples=cfg.mc_samples, seed=cfg.seed,
                                              block_index=b.index, batch=cfg.batch)
        assert np.array_equal(mean.reshape(b.shape), stored["density"][b.slices])
        # Each point's sample deviations have the stored epistemic variance.
        np.testing.assert_allclose(np.mean(dev ** 2, axis=1), stored["density_std_epistemic"][b.slices].ravel() ** 2,
                                   rtol=2e-5, atol=1e-14)
        samples[(slice(None),) + b.slices] = (mean.astype(np.float64)[:, None] + dev).T.reshape((-1,) + b.shape)
    owner, _ = voronoi_owner(grid.points(), atoms.positions, atoms.cell[:])
    per_sample = np.stack([np.bincount(owner, weights=f.ravel(), minlength=len(atoms)) for f in samples],
                          axis=1) * grid.dv
    mean_q = np.bincount(owner, weights=stored["density"].astype(np.float64).ravel(), minlength=len(atoms)) * grid.dv
    q, s = _stored(out)
    np.testing.assert_allclose(q, mean_q, rtol=1e-12)
    assert (s > 0).all()
    np.testing.assert_allclose(s, per_sample.std(axis=1), rtol=1e-6)


def test_translation_by_grid_vectors_keeps_the_charges(tmp_path):
    """Atoms moved by whole grid steps (one block: same Monte Carlo samples): the same charges per atom."""
    model = make_model(tmp_path / "m.safetensors")
    atoms = structure.rattle(structure.fcc_al((1, 1, 1)), 0.08, seed=4)
    kw = dict(grid=(9, 9, 9), spacing=None, block=9, mc_samples=4)
    engine.run(atoms, config(tmp_path / "a.zarr", model, **kw))
    moved = atoms.copy()
    moved.positions += np.array([2 / 9, 3 / 9, -1 / 9]) @ atoms.cell[:]
    engine.run(moved, config(tmp_path / "b.zarr", model, **kw))
    qa, sa = _stored(tmp_path / "a.zarr")
    qb, sb = _stored(tmp_path / "b.zarr")
    np.testing.assert_allclose(qb, qa, rtol=1e-5)
    np.testing.assert_allclose(sb, sa, rtol=1e-3)


@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_interrupted_run_resumes_to_identical_charges(tmp_path, model, atoms):
    ref = tmp_path / "ref.zarr"
    engine.run(atoms, config(ref, model, workers=2))
    out = tmp_path / "o.zarr"
    part = engine.run(atoms, config(out, model, max_blocks=10))
    assert not part.complete and not (out / "charge").exists()
    rest = engine.run(atoms, config(out, model, resume=True))
    assert rest.complete and rest.n_computed == 17
    for a, b in zip(_stored(ref), _stored(out)):
        assert np.array_equal(a, b)
    # A block's charges file is part of what verify checks.
    store.charges_file(out, 3).write_bytes(store.charges_file(out, 4).read_bytes())
    report = store.verify(out)
    assert [i for i, _ in report.corrupt] == [3] and "charges" in report.corrupt[0][1]


def test_cli_prints_and_exports_csv_and_extxyz(tmp_path, model, atoms, capsys):
    import csv

    from ase.io import read

    from bigdens.cli import main

    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model))
    q, s = _stored(out)
    assert main(["charges", str(out), "-o", str(tmp_path / "q.csv")]) == 0
    text = capsys.readouterr().out
    assert "32 atoms" in text and "Al: 32 atoms" in text and "wrote" in text
    rows = list(csv.DictReader((tmp_path / "q.csv").open()))
    assert list(rows[0]) == ["index", "symbol", "x", "y", "z", "charge_e", "charge_std_e", "net_charge_e"]
    np.testing.assert_allclose([float(r["charge_e"]) for r in rows], q, rtol=1e-9)
    np.testing.assert_allclose([float(r["net_charge_e"]) for r in rows], 3 - q, rtol=1e-9)
    np.testing.assert_allclose([float(r["x"]) for r in rows], atoms.positions[:, 0], rtol=1e-9)
    assert main(["charges", str(out), "--output", str(tmp_path / "q.extxyz")]) == 0
    back = read(tmp_path / "q.extxyz")
    np.testing.assert_allclose(back.arrays["charge_e"], q, rtol=0, atol=1e-7)  # extxyz: 8 decimals
    np.testing.assert_allclose(back.arrays["charge_std_e"], s, rtol=0, atol=1e-7)
    np.testing.assert_allclose(back.arrays["net_charge_e"], 3 - q, rtol=0, atol=1e-7)
    # The per-atom variables open with xarray along the atoms' dimension.
    import xarray as xr

    ds = xr.open_zarr(out)
    assert ds.charge.dims == ("atom",) and ds.charge.attrs["units"] == "electron"
    old = tmp_path / "old.zarr"
    shutil.copytree(out, old)
    shutil.rmtree(old / "charge")
    assert main(["charges", str(old)]) == 2
