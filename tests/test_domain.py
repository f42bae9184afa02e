"""The domain check (bigdens.domain): wrong units, vacuum, isolated atoms and absurd grids are refused or
marked, with exit 3, and never returned as a density that looks fine; structures like the training cells pass.

The cases are the ones a user reported with exit 0 in bigdens 0.1: a slab in 20 Å of vacuum (−403 electrons
for 96), one atom in a 40 Å box, a cell written in Bohr, ``--grid 1 1 1``, ``--renormalize`` flipping the sign.
They run the shipped Al model (and 0.1's, which could predict negative densities) for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111
from ase.io import write
from ase.units import Bohr

from bigdens import domain, engine, structure
from bigdens.cli import main

ROOT = Path(__file__).resolve().parent.parent
V1_MODEL = ROOT / "benchmarks" / "results" / "model_v2" / "models" / "al_v1.safetensors"


def _attrs(store) -> dict:
    return json.loads((Path(store) / "zarr.json").read_text())["attributes"]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def slab_file(tmp_path) -> Path:
    """96 Al atoms in six (111) layers with 20 Å of vacuum between the slab's periodic images."""
    slab = fcc111("Al", (4, 4, 6), a=structure.A_AL, vacuum=10.0, periodic=True)
    slab.pbc = True
    slab.wrap()
    slab.info.clear()
    path = tmp_path / "slab.xyz"
    write(path, slab)
    return path


def test_bohr_cell_is_refused_before_anything_is_computed(tmp_path, capsys):
    atoms = structure.fcc_al((2, 2, 2))
    atoms.set_cell(atoms.cell / Bohr, scale_atoms=True)  # the numbers of Å, written as Bohr
    write(tmp_path / "bohr.xyz", atoms)
    status, out, err = _cli(capsys, "predict", tmp_path / "bohr.xyz", "--out", tmp_path / "b.zarr", "--workers", 0)
    assert status == 3 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigdens predict: out of domain: ")
    assert "is the cell in Bohr?" in lines[0] and "nothing was computed" in lines[0]
    assert "--allow-out-of-domain" in lines[0]
    assert not (tmp_path / "b.zarr").exists()


def test_isolated_atom_is_refused(tmp_path, capsys):
    write(tmp_path / "one.xyz", Atoms("Al", positions=[[20, 20, 20]], cell=[40, 40, 40], pbc=True))
    status, _, err = _cli(capsys, "predict", tmp_path / "one.xyz", "--out", tmp_path / "o.zarr", "--workers", 0,
                          "--spacing", 0.5)
    assert status == 3 and "no atom has another within 8 Å" in err
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("grid", [["--grid", 1, 1, 1], ["--spacing", 50]])
def test_absurd_grid_is_refused(tmp_path, capsys, grid):
    write(tmp_path / "al.xyz", structure.fcc_al((2, 2, 2)))
    status, _, err = _cli(capsys, "predict", tmp_path / "al.xyz", "--out", tmp_path / "g.zarr", "--workers", 0, *grid)
    assert status == 3 and "is too coarse" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g.zarr").exists()


def test_coarse_grid_warns_with_the_measured_electron_error():
    atoms = structure.fcc_al((2, 2, 2))
    model = engine.load_model(ROOT / "bigdens" / "models" / "al.safetensors", "")
    from bigdens.grid import make_grid

    report = domain.check_before(atoms, model, make_grid(atoms.cell[:], spacing=0.9), n_expected=96.0)
    assert report.in_domain
    assert len(report.warnings) == 1 and "off by up to 1.1 %" in report.warnings[0]
    # The table is the running maximum of the measurement it cites.
    measured = json.loads((ROOT / "benchmarks/results/domain/grid_integration.json").read_text())["max_over_cells"]
    for h, err in measured.items():
        assert domain.spacing_error(float(h)) >= err


def test_slab_in_vacuum_refused_then_accepted_and_marked(slab_file, tmp_path, capsys):
    out = tmp_path / "slab.zarr"
    args = ["predict", slab_file, "--out", out, "--workers", 0, "--spacing", 0.3, "--mc-samples", 4]
    status, _, err = _cli(capsys, *args)
    assert status == 3 and "of a 8192-point probe" in err and not out.exists()

    status, stdout, err = _cli(capsys, *args, "--allow-out-of-domain")
    assert status == 0
    assert "OUT OF DOMAIN (accepted by --allow-out-of-domain)" in stdout
    attrs = _attrs(out)
    assert attrs["complete"] and attrs["in_domain"] is False and attrs["domain"]["accepted_out_of_domain"]
    assert any("unsure at" in r for r in attrs["domain_reasons"])
    assert attrs["domain"]["measured"]["flagged_share"] > domain.FLAGGED_MAX
    import xarray as xr

    with xr.open_zarr(out) as ds:  # a reader in xarray sees it
        assert ds.attrs["in_domain"] is False and ds.attrs["domain_reasons"]


def test_checks_after_the_run_mark_the_store_and_exit_3(slab_file, tmp_path, capsys, monkeypatch):
    """With the probe's limits out of reach, only the exact checks after the run can catch the slab."""
    monkeypatch.setattr(domain, "PROBE_FACTOR", 1e9)
    out = tmp_path / "slab.zarr"
    status, stdout, err = _cli(capsys, "predict", slab_file, "--out", out, "--workers", 0, "--spacing", 0.3,
                               "--mc-samples", 4)
    assert status == 3
    assert "store marked in_domain: false" in stdout
    lines = err.splitlines()  # the spacing warning, then the one out-of-domain line
    assert lines[-1].startswith("bigdens predict: out of domain: ") and "Traceback" not in err
    assert "is written and marked in_domain: false" in lines[-1]
    attrs = _attrs(out)
    assert attrs["complete"] and attrs["in_domain"] is False
    assert not attrs["domain"]["accepted_out_of_domain"]
    # The exact share equals the ledger's count of flagged points.
    assert attrs["domain"]["measured"]["flagged_share"] == pytest.approx(
        attrs["n_epistemic_high"] / np.prod(attrs["grid_shape"]))
    # The Python API raises once the store is written.
    with pytest.raises(domain.OutOfDomainError, match="marked in_domain: false"):
        engine.predict(str(slab_file), out=tmp_path / "api.zarr", workers=0, spacing=0.3, mc_samples=4,
                       progress=False)
    assert _attrs(tmp_path / "api.zarr")["in_domain"] is False


@pytest.mark.skipif(not V1_MODEL.is_file(), reason="bigdens 0.1's Al model is not in this checkout")
def test_renormalize_never_flips_the_sign(slab_file, tmp_path, capsys):
    """0.1's model predicts about −400 electrons for the slab; 0.1 then multiplied the density by −0.24."""
    out = tmp_path / "v1.zarr"
    status, stdout, _ = _cli(capsys, "predict", slab_file, "--out", out, "--workers", 0, "--spacing", 0.3,
                             "--mc-samples", 4, "--model", V1_MODEL, "--renormalize", "--allow-out-of-domain")
    assert status == 0  # accepted, but the factor is not applied
    attrs = _attrs(out)
    assert attrs["n_electrons_predicted"] < 0
    assert attrs["renormalization_factor"] is None
    assert any("--renormalize would multiply the density by -" in r for r in attrs["domain_reasons"])
    import zarr

    # Nothing scaled: every ledger entry is raw.
    assert all(json.loads(f.read_text())["scale"] == 1.0 for f in (out / "ledger").glob("block-*.json"))
    rho = zarr.open_group(str(out), mode="r")["density"][:]
    assert rho.min() < 0 < rho.max()


def test_bulk_cell_is_in_domain(tmp_path, capsys):
    atoms = structure.fcc_al((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    write(tmp_path / "al.xyz", atoms)
    out = tmp_path / "al.zarr"
    status, stdout, err = _cli(capsys, "predict", tmp_path / "al.xyz", "--out", out, "--workers", 0,
                               "--mc-samples", 4)
    assert status == 0 and "OUT OF DOMAIN" not in stdout and "out of domain" not in err
    attrs = _attrs(out)
    assert attrs["in_domain"] is True and attrs["domain_reasons"] == []
    assert abs(attrs["domain"]["measured"]["electron_error"]) < domain.ELECTRON_MAX
    assert attrs["domain"]["measured"]["negative_share"] == 0.0  # ρ ≥ 0 by construction (format 2)


def test_nearest_neighbour_distances_brute_force(rng):
    cell = np.array([[5.1, 0.0, 0.0], [1.3, 4.7, 0.0], [0.8, -0.9, 6.2]])
    positions = rng.uniform(0, 1, size=(13, 3)) @ cell
    numbers = rng.choice([14, 32], size=13)
    got = domain.nearest_neighbour_distances(positions, numbers, cell)
    frac = np.linalg.solve(cell.T, positions.T).T
    shifts = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)])
    want = []
    for i in range(13):
        d = np.linalg.norm(((frac - frac[i])[:, None, :] + shifts) @ cell, axis=-1)
        d[i, shifts.tolist().index([0, 0, 0])] = np.inf
        want.append(d.min())
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_check_after_limits():
    ok = domain.check_after(n_points=1000, n_flagged=10, n_electrons=96.5, n_expected=96.0, negative_electrons=0.0)
    assert ok.in_domain
    bad = domain.check_after(n_points=1000, n_flagged=101, n_electrons=-403.0, n_expected=96.0,
                             negative_electrons=410.0)
    assert len(bad.reasons) == 3
    assert domain.check_after(n_points=1000, n_flagged=None, n_electrons=96.0, n_expected=None,
                              negative_electrons=None).in_domain
    assert domain.renormalization_refusal(-0.24, allow=True) is not None
    assert domain.renormalization_refusal(0.99, allow=False) is None
    assert domain.renormalization_refusal(0.9, allow=False) is not None
    assert domain.renormalization_refusal(0.9, allow=True) is None


# -- per atom, per frame, wrapped (issue "Reliability III", items 1 and 2) ----------------------------------

SHIPPED_AL = ROOT / "bigdens" / "models" / "al.safetensors"


@pytest.fixture(scope="module")
def al_model():
    from bigdens import bnn

    return bnn.load(SHIPPED_AL)


def _brute_nearest(positions, cell):
    """Each atom's nearest other image (distance, index) over shifts -2..2: exact for these small cells."""
    frac = np.linalg.solve(cell.T, positions.T).T
    frac -= np.floor(frac)
    shifts = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)])
    zero = shifts.tolist().index([0, 0, 0])
    dist, index = [], []
    for i in range(len(frac)):
        d = np.linalg.norm(((frac - frac[i])[:, None, :] + shifts) @ cell, axis=-1)
        d[i, zero] = np.inf
        j = int(np.argmin(d.min(axis=1)))
        dist.append(d[j].min())
        index.append(j)
    return np.array(dist), np.array(index)


def _unwrap(atoms, cells: float, rng):
    """A copy of ``atoms`` with every atom moved by a random whole lattice vector of up to ±``cells`` cells."""
    out = atoms.copy()
    out.positions = atoms.positions + rng.integers(-cells, cells + 1, size=(len(atoms), 3)).astype(float) @ atoms.cell[:]
    return out


@pytest.mark.parametrize("cells", [50, 500, 10**5])
def test_neighbours_of_unwrapped_atoms_equal_the_wrapped_ones_and_brute_force(rng, cells):
    cell = np.array([[5.1, 0.0, 0.0], [1.3, 4.7, 0.0], [0.8, -0.9, 6.2]])
    atoms = Atoms(numbers=rng.choice([14, 32], size=13), positions=rng.uniform(0, 1, size=(13, 3)) @ cell, cell=cell,
                  pbc=True)
    want_d, want_j = _brute_nearest(atoms.positions, cell)
    far = _unwrap(atoms, cells, rng)
    for a in (atoms, far):
        d, j = domain.nearest_neighbours(a.positions, a.numbers, a.cell[:])
        np.testing.assert_allclose(d, want_d, rtol=0, atol=1e-8)
        assert (j == want_j).all()  # random positions: no ties
    # The bond spread (thermal) and the descriptors at the atoms see the same wrapped structure.
    from bigdens import thermal

    assert thermal.bond_spread(far.positions, far.numbers, cell) == pytest.approx(
        thermal.bond_spread(atoms.positions, atoms.numbers, cell), abs=1e-8)


def test_far_atoms_cost_no_more_than_near_ones(al_model):
    # One atom 8e6 Å out (6.6e5 cells: the 15 GB case of the issue) and all atoms 10^5 cells out: the work is
    # bounded by the atoms (the call returns at once with the wrapped answer), not by the unwrapped span.
    from ase.build import bulk

    from bigdens import celllist

    al = bulk("Al", "fcc", a=structure.A_AL, cubic=True).repeat(3)
    al.rattle(0.05, seed=2)
    base = domain.check_structure(al, al_model)
    assert base.in_domain
    far = al.copy()
    far.positions[5] += np.round(8e6 / al.cell[0, 0]) * al.cell[0]
    all_far = _unwrap(al, 10**5, np.random.default_rng(4))
    for a in (far, all_far):
        structure.validate(a)
        report = domain.check_structure(a, al_model)
        assert report.in_domain
        assert report.measured["nn_distance_median"] == pytest.approx(base.measured["nn_distance_median"], abs=1e-8)
    # The kernel's work in a call: the atoms within reach of each atom's wrapped position, nothing more.
    cl = celllist.build_cell_list(al.cell[:], all_far.positions)
    idx, _ = cl.query_sphere_box(cl.frac.min(axis=0), cl.frac.max(axis=0), 3.0)
    assert len(idx) < 8 * len(al)


def test_positions_beyond_a_million_cells_are_refused():
    al = structure.fcc_al((1, 1, 1))
    for value in (1e17, 8e6 * 1e3):
        a = al.copy()
        a.positions[3, 1] = value
        with pytest.raises(structure.InputError, match=r"atom 3, .* cell lengths\): float64 cannot place them"):
            structure.validate(a)
    from bigdens import descriptors

    with pytest.raises(structure.InputError, match="cell lengths"):
        descriptors.compute(al.positions, al.numbers, al.cell[:], [[1e17, 0, 0]],
                            descriptors.default_params([13]))


def test_kernel_passes_give_the_same_answer_as_one_call(rng, monkeypatch):
    # Chunked calls (so that Ctrl-C and SIGTERM are heard between them) change no number.
    from bigdens import celllist, descriptors

    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.1, seed=5)
    points = rng.uniform(-3, 4, size=(500, 3)) @ atoms.cell[:] / 2
    params = descriptors.default_params([13])
    d0, j0 = domain.nearest_neighbours(atoms.positions, atoms.numbers, atoms.cell[:])
    f0 = descriptors.compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    pairs0 = celllist.min_image_pairs_closer_than(celllist.build_cell_list(atoms.cell[:], atoms.positions), 2.7,
                                                  max_report=1000)
    monkeypatch.setattr(celllist, "KERNEL_ATOMS", 3)
    monkeypatch.setattr(descriptors, "COMPUTE_POINTS", 37)
    d1, j1 = domain.nearest_neighbours(atoms.positions, atoms.numbers, atoms.cell[:])
    assert (d0 == d1).all() and (j0 == j1).all()
    np.testing.assert_allclose(descriptors.compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params), f0,
                               rtol=1e-6, atol=1e-6)
    pairs1 = celllist.min_image_pairs_closer_than(celllist.build_cell_list(atoms.cell[:], atoms.positions), 2.7,
                                                  max_report=1000)
    assert len(pairs0) > 5 and (pairs1 == pairs0).all()
    assert len(celllist.min_image_pairs_closer_than(celllist.build_cell_list(atoms.cell[:], atoms.positions), 2.7,
                                                    max_report=4)) == 4


def test_one_impossible_atom_is_refused_naming_it(al_model):
    from ase.build import bulk

    al = bulk("Al", "fcc", a=structure.A_AL, cubic=True).repeat(3)
    pair = al.copy()
    pair.positions[1] = pair.positions[0] + [0.6, 0.0, 0.0]
    report = domain.check_structure(pair, al_model)
    assert not report.in_domain and len(report.reasons) == 1  # 2 of 108 atoms: the share check alone passes
    assert "atoms 0 and 1 are 0.600 Å apart" in report.reasons[0]
    assert report.measured["nn_outside_share"] < domain.NN_SHARE_MAX
    assert [r[:2] for r in report.measured["nn_refused_atoms"]] == [[0, 1], [1, 0]]
    inter = al.copy()
    inter.append("Al")
    inter.positions[108] = inter.positions[17] + [0.0, 0.55, 0.0]
    report = domain.check_structure(inter, al_model)
    assert "atoms 17 and 108 are 0.550 Å apart" in report.message()
    # The limits: the training range widened by its spread or ±25 %, whichever is wider.
    lo, hi = al_model.info["domain_reference"]["nn_distance"]
    a, b = domain.refusal_range(lo, hi)
    assert a == pytest.approx(lo - (hi - lo)) and b == pytest.approx(hi * domain.NN_MARGIN)
    ok = al.copy()
    ok.positions[1] = ok.positions[0] + (ok.positions[1] - ok.positions[0]) * (a + 0.02) / 2.8637824638
    assert domain.check_structure(ok, al_model).in_domain


def test_trajectory_frame_refused_on_its_own_is_refused_inside_it(tmp_path, capsys):
    from ase.build import bulk

    al = bulk("Al", "fcc", a=structure.A_AL, cubic=True).repeat(3)
    frames = [structure.rattle(al, 0.03, seed=k) for k in range(5)]
    frames[3].positions[1] = frames[3].positions[0] + [0.6, 0.0, 0.0]
    write(tmp_path / "md.xyz", frames, format="extxyz")
    write(tmp_path / "f3.xyz", frames[3])
    status, _, alone = _cli(capsys, "predict", tmp_path / "f3.xyz", "--out", tmp_path / "a.zarr", "--workers", 0)
    assert status == 3 and "atoms 0 and 1 are 0.600 Å apart" in alone
    status, out, err = _cli(capsys, "predict", tmp_path / "md.xyz", "--frames", "1:5", "--out", tmp_path / "t.zarr",
                            "--workers", 0)
    assert status == 3 and out == "" and len(err.splitlines()) == 1
    assert "frame 3: 2 atom(s) have their nearest neighbour outside" in err and "frame 1" not in err
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "a.zarr").exists()


def test_allow_out_of_domain_still_predicts_the_impossible_atom(tmp_path, capsys):
    from ase.build import bulk

    al = bulk("Al", "fcc", a=structure.A_AL, cubic=True).repeat(3)
    al.positions[1] = al.positions[0] + [0.6, 0.0, 0.0]
    write(tmp_path / "pair.xyz", al)
    out = tmp_path / "p.zarr"
    status, stdout, err = _cli(capsys, "predict", tmp_path / "pair.xyz", "--out", out, "--workers", 0, "--grid",
                               24, 24, 24, "--block", 24, "--mc-samples", 2, "--allow-out-of-domain")
    assert status == 0, err
    attrs = _attrs(out)
    assert attrs["in_domain"] is False
    assert any("atoms 0 and 1 are 0.600 Å apart" in r for r in attrs["domain_reasons"])
    assert attrs["domain"]["measured"]["nn_refused_count"] == 2
