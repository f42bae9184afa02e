"""Starting DFT from a density (bigdens.dft.start, ``bigdens dft``): grids, electrons, refusals, and real GPAW runs.

The GPAW tests run a 4-atom FCC Al cell at low settings (300 eV, 3×3×3 k-points, 16³ grid), one process.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from ase.build import bulk

from bigdens import engine, structure
from bigdens.cli import main
from bigdens.dft.start import (check_same_structure, fourier_resample, prepare_density, read_store_density,
                               warm_start)
from bigdens.errors import InputError, SetupError

from helpers import config as engine_config, make_model

TRICLINIC = np.array([[4.0, 0.0, 0.0], [1.1, 3.7, 0.0], [-0.6, 0.9, 4.4]])


def trig_field(shape, freqs, coeffs):
    """Brute force: Σ_k c_k cos(2π k·f + φ_k) at every point f = (i/n1, j/n2, l/n3) of a grid of ``shape``."""
    f = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), axis=-1)
    out = np.zeros(shape)
    for k, (a, phi) in zip(freqs, coeffs):
        out += a * np.cos(2 * np.pi * (f @ np.asarray(k, dtype=float)) + phi)
    return out


def band_limited(rng, shape_a, shape_b, n_terms=25):
    # Frequencies strictly below both grids' Nyquist limits along each axis.
    lim = [(min(a, b) - 1) // 2 for a, b in zip(shape_a, shape_b)]
    freqs = [tuple(int(rng.integers(-m, m + 1)) for m in lim) for _ in range(n_terms)]
    coeffs = [(rng.uniform(0.1, 1.0), rng.uniform(0, 2 * np.pi)) for _ in range(n_terms)]
    return freqs, coeffs


@pytest.mark.parametrize("src,dst", [((10, 12, 9), (16, 8, 15)), ((8, 8, 8), (12, 13, 7)), ((9, 11, 7), (9, 11, 7))])
def test_fourier_resample_is_exact_for_band_limited_fields(rng, src, dst):
    freqs, coeffs = band_limited(rng, src, dst)
    got = fourier_resample(trig_field(src, freqs, coeffs) + 2.0, dst)
    np.testing.assert_allclose(got, trig_field(dst, freqs, coeffs) + 2.0, atol=1e-12, rtol=0)


def test_refine_then_coarsen_is_the_identity_nyquist_included(rng):
    field = rng.uniform(0, 1, size=(8, 10, 6))  # even sizes: Nyquist terms present
    fine = fourier_resample(field, (13, 16, 12))
    np.testing.assert_allclose(fourier_resample(fine, field.shape), field, atol=1e-13, rtol=0)
    assert np.isrealobj(fine) and fine.mean() == pytest.approx(field.mean(), abs=1e-15)


@pytest.mark.parametrize("shape", [(12, 14, 15), (20, 18, 21), (16, 16, 16)])
def test_prepare_density_electrons_exact_and_non_negative(rng, shape):
    src = (16, 16, 16)
    rho = 0.02 + 0.05 * np.abs(trig_field(src, *band_limited(rng, src, src, 8)))
    volume = abs(np.linalg.det(TRICLINIC))
    rho *= 12.0 / (rho.sum() * volume / rho.size)
    rho[3, 4, 5] = -0.01  # a negative value, as a prediction may hold
    out, report = prepare_density(rho, cell=TRICLINIC, shape=shape, n_electrons=12.0 * 1.004)
    assert out.shape == shape and out.min() >= 0.0
    assert abs(out.sum() * volume / out.size - 12.048) < 1e-10
    assert report.resampled == (shape != src) and report.target_shape == shape and report.n_negative >= 1
    assert report.negative_charge > 0 and abs(report.integral_out - 12.048) < 1e-10
    integral_clipped = report.integral_out / report.rescale_factor
    assert integral_clipped == pytest.approx(rho.sum() * volume / rho.size + report.negative_charge, rel=1e-12)
    assert "rescaled by" in report.describe()


def test_prepare_density_refuses_nan_and_other_electron_counts():
    rho = np.full((8, 8, 8), 12.0 / 64.0)  # 12 e in a 64 Å³ cell
    cell = np.eye(3) * 4.0
    with pytest.raises(InputError, match="more than 10% off"):
        prepare_density(rho, cell=cell, shape=(8, 8, 8), n_electrons=44.0)  # e.g. semicore setups
    rho[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite values"):
        prepare_density(rho, cell=cell, shape=(8, 8, 8), n_electrons=12.0)


def test_check_same_structure():
    atoms = structure.rattle(bulk("Al", "fcc", a=4.05, cubic=True), 0.05, seed=1)
    wrapped = atoms.copy()
    wrapped.positions[1] += atoms.cell[2]  # the same atom, one lattice vector away
    check_same_structure(wrapped, atoms)
    other = atoms.copy()
    other.numbers[2] = 14
    with pytest.raises(InputError, match="atom 2 is Si but Al in the store"):
        check_same_structure(other, atoms)
    strained = atoms.copy()
    strained.set_cell(atoms.cell[:] * 1.01, scale_atoms=True)
    with pytest.raises(InputError, match="the cell differs"):
        check_same_structure(strained, atoms)
    moved = atoms.copy()
    moved.positions[3] += 0.2
    with pytest.raises(InputError, match="atom 3 .* from its place"):
        check_same_structure(moved, atoms)


@pytest.fixture(scope="module")
def al_store(tmp_path_factory):
    """A complete store of the 4-atom Al cell (untrained model, renormalised to 12 e), and an incomplete copy."""
    import shutil

    d = tmp_path_factory.mktemp("dftstart")
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    model = make_model(d / "m.safetensors")
    out = d / "al.zarr"
    engine.run(atoms, engine_config(out, model, spacing=None, grid=(12, 12, 12), block=6, domain_check=False,
                                    renormalize=True))
    partial = d / "partial.zarr"
    shutil.copytree(out, partial)
    zarr.open_group(str(partial), mode="r+").attrs["complete"] = False
    return atoms, out, partial


def test_read_store_density_and_its_refusals(al_store, tmp_path):
    atoms, out, partial = al_store
    back, rho = read_store_density(out)
    assert rho.shape == (12, 12, 12) and rho.dtype == np.float64
    np.testing.assert_array_equal(rho, zarr.open_group(str(out), mode="r")["density"][:])
    assert list(back.numbers) == list(atoms.numbers) and np.allclose(back.cell[:], atoms.cell[:])
    assert rho.sum() * atoms.get_volume() / rho.size == pytest.approx(12.0, rel=1e-4)
    with pytest.raises(InputError, match="is incomplete"):
        read_store_density(partial)
    with pytest.raises(SetupError, match="is not a bigdens store"):
        read_store_density(tmp_path)


def one_line(err, *parts):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigdens dft: error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("case", ["incomplete", "not-a-store", "species", "cell", "suffix"])
def test_cli_bad_input_is_one_line_exit_2(al_store, tmp_path, capsys, case):
    from ase.io import write

    atoms, out, partial = al_store
    args = ["dft", str(out), "-o", str(tmp_path / "o.gpw")]
    parts = []
    if case == "incomplete":
        args[1], parts = str(partial), ["is incomplete", "--resume"]
    elif case == "not-a-store":
        args[1], parts = str(tmp_path), ["is not a bigdens store"]
    elif case == "species":
        other = atoms.copy()
        other.numbers[0] = 14
        write(tmp_path / "s.xyz", other)
        args += ["--structure", str(tmp_path / "s.xyz")]
        parts = ["atom 0 is Si but Al in the store", "same order"]
    elif case == "cell":
        other = bulk("Al", "fcc", a=4.10, cubic=True)
        write(tmp_path / "s.xyz", other)
        args += ["--structure", str(tmp_path / "s.xyz")]
        parts = ["the cell differs"]
    else:
        args[3], parts = str(tmp_path / "o.out"), ["must be a GPAW restart file named *.gpw"]
    capsys.readouterr()
    assert main(args) == 2
    got = capsys.readouterr()
    assert got.out == ""
    one_line(got.err, *parts)
    assert not (tmp_path / "o.gpw").exists()


# ------------------------------------------------------------------------------------------------
# Real GPAW
# ------------------------------------------------------------------------------------------------

ECUT, KPTS, GPTS = 300.0, (3, 3, 3), (16, 16, 16)


def al_calc(gpaw, **kw):
    return gpaw.GPAW(mode=gpaw.PW(ECUT), setups="hgh", xc="LDA", occupations=gpaw.FermiDirac(0.1), kpts=KPTS,
                     gpts=GPTS, convergence={"density": 1e-5}, txt=None, **kw)


@pytest.fixture(scope="module")
def al_default(gpaw):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.calc = calc = al_calc(gpaw)
    energy = atoms.get_potential_energy()
    return energy, calc.get_pseudo_density(), calc.get_number_of_iterations()


@pytest.mark.gpaw
def test_start_from_the_converged_density_converges_at_once(gpaw, al_default):
    from ase.units import Bohr

    energy, rho, niter = al_default
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    calc = al_calc(gpaw)
    report = warm_start(calc, atoms, rho)
    # What GPAW holds before the SCF: the density, electrons exact, non-negative.
    nt = calc.dft.density.nt_sR
    assert abs(float(nt.integrate().sum()) - 12.0) < 1e-10 and nt.data.min() >= 0
    np.testing.assert_allclose(nt.data[0] / Bohr**3, rho, rtol=1e-9, atol=1e-12)
    assert report.rescale_factor == pytest.approx(1.0, abs=1e-9) and not report.resampled
    atoms.calc = calc
    assert calc.get_number_of_iterations() is not None
    assert abs(atoms.get_potential_energy() - energy) < 1e-3  # eV per cell
    assert calc.get_number_of_iterations() <= 4 < niter


@pytest.mark.gpaw
def test_start_from_a_perturbed_density_on_another_grid_reaches_the_same_ground_state(gpaw, al_default, rng):
    energy, rho, niter = al_default
    noise = fourier_resample(rng.standard_normal((5, 5, 5)), rho.shape)  # smooth
    start = fourier_resample(rho * (1 + 0.01 * noise / np.abs(noise).max()), (20, 20, 20))  # another grid
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    calc = al_calc(gpaw)
    report = warm_start(calc, atoms, start)
    assert report.resampled and report.source_shape == (20, 20, 20) and report.target_shape == GPTS
    assert abs(float(calc.dft.density.nt_sR.integrate().sum()) - 12.0) < 1e-10
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - energy) < 1e-3
    got = calc.get_pseudo_density()
    assert np.abs(got - rho).sum() / np.abs(rho).sum() <= 1e-4  # NMAE ≤ 0.01 %


@pytest.mark.gpaw
def test_paw_setups_and_spin_are_refused_in_one_line(gpaw):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    rho = np.full(GPTS, 12.0 / atoms.get_volume())
    for kw, part in (({"setups": "paw"}, "setups 'paw' are PAW"), ({}, "setups 'paw' are PAW"),
                     ({"setups": "hgh", "spinpol": True}, "spin-paired")):
        calc = gpaw.GPAW(mode=gpaw.PW(ECUT), kpts=KPTS, gpts=GPTS, txt=None, **kw)
        with pytest.raises(SetupError, match=part) as info:
            warm_start(calc, atoms, rho)
        assert "\n" not in str(info.value)


@pytest.mark.gpaw
def test_cli_runs_gpaw_from_a_store_and_writes_a_gpw(gpaw, al_store, tmp_path, capsys):
    atoms, out, _ = al_store
    capsys.readouterr()
    rc = main(["dft", str(out), "-o", str(tmp_path / "al.gpw"), "--protocol", "v1", "--ecut", str(ECUT),
               "--kpts", *map(str, KPTS), "--gpts", *map(str, GPTS)])
    got = capsys.readouterr()
    assert rc == 0, got.err
    assert "grid 12x12x12 -> 16x16x16 (Fourier interpolation)" in got.out and "rescaled by" in got.out
    assert "converged in" in got.out and "wrote" in got.out
    back = gpaw.GPAW(str(tmp_path / "al.gpw"), txt=None)
    rho = back.get_pseudo_density()
    assert rho.shape == GPTS and abs(rho.sum() * atoms.get_volume() / rho.size - 12.0) < 1e-6
    assert (tmp_path / "al.txt").is_file()


# ------------------------------------------------------------------------------------------------
# Harris-Foulkes energies (bigdens.dft.harris) and the σ gate of `bigdens dft`
# ------------------------------------------------------------------------------------------------

@pytest.mark.gpaw
def test_harris_foulkes_is_the_scf_energy_at_the_ground_state_and_second_order_off_it(gpaw, al_default):
    from bigdens.dft.harris import harris_foulkes

    energy, rho, _ = al_default
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    make = lambda: al_calc(gpaw)  # noqa: E731
    at_ground_state = harris_foulkes(make, atoms, rho)
    assert abs(at_ground_state.energy - energy) < 1e-5  # eV per cell: the functional is the SCF energy there
    noise = fourier_resample(np.random.default_rng(3).standard_normal((5, 5, 5)), rho.shape)
    noise /= np.abs(noise).max()
    errors = [harris_foulkes(make, atoms, rho * (1 + eps * noise)).energy - energy for eps in (0.01, 0.02)]
    # Stationary: doubling the density error makes the energy error about four times larger (not two).
    assert 3.0 < errors[1] / errors[0] < 5.0, errors
    assert abs(errors[0]) / len(atoms) < 2e-3  # 1 % smooth noise: well inside 2 meV/atom


@pytest.fixture(scope="module")
def al_shipped_store(tmp_path_factory):
    """A store of the 4-atom Al cell predicted by the shipped Al model on the test's DFT grid."""
    from bigdens.models import shipped_model_for

    d = tmp_path_factory.mktemp("dftstart-shipped")
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    out = d / "al.zarr"
    engine.run(atoms, engine_config(out, shipped_model_for(atoms.numbers), spacing=None, grid=GPTS, block=16))
    return atoms, out


@pytest.mark.gpaw
def test_cli_harris_foulkes_energy_and_sigma_of_a_prediction(gpaw, al_default, al_shipped_store, tmp_path, capsys):
    import json

    energy, _, _ = al_default
    _, out = al_shipped_store
    capsys.readouterr()
    rc = main(["dft", str(out), "--harris-foulkes", "--samples", "2", "-o", str(tmp_path / "hf.json"), "--ecut",
               str(ECUT), "--kpts", *map(str, KPTS), "--gpts", *map(str, GPTS)])
    got = capsys.readouterr()
    assert rc == 0, got.err
    result = json.loads((tmp_path / "hf.json").read_text())
    assert "Harris-Foulkes energy" in got.out and "meV/atom (σ, 2 sample densities)" in got.out
    assert abs(result["energy_eV"] - energy) / 4 < 2e-3  # the target, 2 meV/atom, on an in-domain cell
    assert len(result["sample_energies_eV"]) == 2 and result["sigma_eV"] > 0
    assert all(abs(e - energy) / 4 < 2e-3 for e in result["sample_energies_eV"])


@pytest.mark.gpaw
def test_the_sigma_gate_starts_a_flagged_structure_from_atomic_densities(gpaw, al_shipped_store, tmp_path, capsys):
    import shutil

    from bigdens.cli.dft import GATE_FLAGGED_SHARE

    _, out = al_shipped_store
    flagged = tmp_path / "flagged.zarr"
    shutil.copytree(out, flagged)
    group = zarr.open_group(str(flagged), mode="r+")
    domain = dict(group.attrs["domain"])
    assert domain["measured"]["flagged_share"] <= GATE_FLAGGED_SHARE  # the real prediction passes the gate
    domain["measured"] = {**domain["measured"], "flagged_share": 2 * GATE_FLAGGED_SHARE}
    group.attrs["domain"] = domain
    settings = ["--ecut", str(ECUT), "--kpts", *map(str, KPTS), "--gpts", *map(str, GPTS)]
    for store, start, says in ((out, "auto", "rescaled by"), (flagged, "auto", "Starting from GPAW's atomic"),
                               (flagged, "predicted", "rescaled by")):
        capsys.readouterr()
        assert main(["dft", str(store), "-o", str(tmp_path / f"{start}.gpw"), "--start", start, *settings]) == 0
        text = capsys.readouterr().out
        assert says in text, text
        assert ("from GPAW's atomic densities)" in text) == (says.startswith("Starting"))


def test_density_samples_spread_as_the_model_s_sigma(tmp_path):
    # The sample fields are the model's own Monte Carlo densities: their mean is the prediction and their
    # per-point spread (divisor S) the epistemic σ that predict returns, on every grid point; widened, the total σ.
    from bigdens import bnn
    from bigdens.descriptors import compute
    from bigdens.dft.harris import density_samples
    from bigdens.grid import make_grid
    from bigdens.thermal import bond_spread

    from bigdens.models import shipped_model_for

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    model = bnn.load(shipped_model_for(atoms.numbers))  # last-layer, as every shipped model
    atoms.rattle(0.08, seed=4)  # no equidistant neighbours: their order (and the angles) would be a tie
    shape = (6, 7, 8)
    mean, fields = density_samples(model, atoms, shape, samples=12, seed=5)
    grid = make_grid(atoms.cell[:], shape=shape)
    positions = atoms.get_positions(wrap=True)
    x = compute(positions, atoms.numbers, atoms.cell[:], grid.points(), model.params)
    ref, epi, ale = model.predict(x, samples=12, seed=5, disorder=bond_spread(positions, atoms.numbers, atoms.cell[:]))
    np.testing.assert_allclose(mean.ravel(), ref, rtol=1e-6)
    np.testing.assert_allclose(fields.mean(axis=0), mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fields.std(axis=0).ravel(), np.sqrt(epi), rtol=1e-3)
    _, wide = density_samples(model, atoms, shape, samples=12, seed=5, spread="total")
    from bigdens.dft.harris import MAX_WIDENING

    epi64 = epi.astype(np.float64)
    widened = np.sqrt(epi64) * np.minimum(np.sqrt((epi64 + ale) / epi64), MAX_WIDENING)  # the total σ, capped
    np.testing.assert_allclose(wide.std(axis=0).ravel(), widened, rtol=1e-3)
    with pytest.raises(InputError, match="spread must be"):
        density_samples(model, atoms, shape, spread="aleatoric")
