"""Data generation: protocol settings, potentials, thermalization, splits, resumability, GPAW end to end."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from bigdens import datagen
from bigdens.cli import main
from bigdens.data import load, read_manifest
from bigdens.datagen import (
    PROTOCOL, DFTSettings, MDSettings, Tersoff_PRB_39_5566_Si_Ge, assign_splits, check_temperatures,
    make_plan, thermalize,
)
from bigdens.errors import InputError, MissingDependencyError
from bigdens.structure import diamond_sige, fcc_al

FAST_MD = MDSettings(equilibration_ps=0.02, interval_ps=0.01)


def test_protocol_grid_and_kpoints():
    s = DFTSettings()
    assert s.protocol == PROTOCOL
    al32 = fcc_al((2, 2, 2)).cell[:]
    assert s.kpts_for(al32) == (2, 2, 2) and s.gpts_for(al32) == (44, 44, 44)
    al4 = fcc_al((1, 1, 1)).cell[:]
    assert s.kpts_for(al4) == (4, 4, 4) and s.gpts_for(al4) == (24, 24, 24)
    al108 = fcc_al((3, 3, 3)).cell[:]
    assert s.kpts_for(al108) == (2, 2, 2) and s.gpts_for(al108) == (64, 64, 64)
    big = np.diag([20.0, 16.0, 15.9])
    assert s.kpts_for(big) == (1, 1, 2)
    custom = DFTSettings(kpts=(2, 2, 2), gpts=(16, 16, 16))
    assert custom.protocol.startswith("custom-") and custom.protocol != s.protocol
    assert custom.kpts_for(al32) == (2, 2, 2)
    with pytest.raises(InputError, match="positive"):
        DFTSettings(ecut=-1)
    with pytest.raises(InputError, match="three positive integers"):
        DFTSettings(kpts=(0, 1, 1))


def test_tersoff_si_part_reproduces_matscipy():
    pytest.importorskip("matscipy")
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import TersoffBrenner
    from matscipy.calculators.manybody.explicit_forms.tersoff_brenner import Tersoff_PRB_39_5566_Si_C as si_c

    p = Tersoff_PRB_39_5566_Si_Ge
    assert p["el"] == ["Si", "Ge"] and set(p) == set(si_c)
    # matscipy's list is [C, Si]: element lists index 1, pair lists (CC, CSi, SiSi) index 2.
    for key in ("beta", "n", "c", "d", "h"):
        assert p[key][0] == pytest.approx(si_c[key][1], rel=1e-12), key
    for key in ("A", "B", "lambda", "mu", "r1", "r2", "chi", "lambda3"):
        assert p[key][0] == pytest.approx(si_c[key][2], rel=1e-12), key
    # mixing rules
    assert p["A"][1] == pytest.approx(np.sqrt(1830.8 * 1769.0))
    assert p["lambda"][1] == pytest.approx((2.4799 + 2.4451) / 2)
    assert p["r2"][1] == pytest.approx(np.sqrt(3.0 * 3.1))
    assert p["chi"][1] == 1.00061
    # Same energy and forces as matscipy's Si for pure Si.
    from bigdens.structure import rattle

    si = rattle(diamond_sige((1, 1, 1), x=0.0), 0.05, seed=1)
    si.calc = Manybody(**TersoffBrenner(si_c))
    e1, f1 = si.get_potential_energy(), si.get_forces()
    si.calc, name = datagen.classical_calculator(si)
    assert name == "tersoff-sige"
    assert si.get_potential_energy() == pytest.approx(e1, rel=1e-12)
    np.testing.assert_allclose(si.get_forces(), f1, atol=1e-10)
    # Tersoff's Si and Ge cohesive energies (eV/atom) at their lattice constants.
    for x, e_coh in ((0.0, -4.63), (1.0, -3.85)):
        crystal = diamond_sige((1, 1, 1), x=x)
        crystal.calc, _ = datagen.classical_calculator(crystal)
        assert crystal.get_potential_energy() / 8 == pytest.approx(e_coh, abs=0.01)


def test_temperatures_must_be_positive():
    with pytest.raises(InputError, match="> 0 K"):
        check_temperatures([300, 0])
    with pytest.raises(InputError, match="> 0 K"):
        thermalize(fcc_al(1), -5.0, n_snapshots=1, md=FAST_MD, seed=0)
    assert main(["datagen", "al", "--temperatures", "300", "-10", "-o", "x"]) == 2
    assert not os.path.exists("x")


def test_no_potential_or_setup_is_a_clear_error(capsys):
    from ase import Atoms

    la = Atoms("La2", positions=[[0, 0, 0], [2, 2, 2]], cell=4 * np.eye(3), pbc=True)
    la.write("la.xyz", format="extxyz")
    assert main(["datagen", "la.xyz", "--temperatures", "300", "-o", "out"]) == 2
    err = capsys.readouterr().err
    assert "no HGH" in err and "La" in err
    with pytest.raises(InputError, match="no HGH"):
        datagen.dft_density(la)
    with pytest.raises(InputError, match="no classical potential"):
        thermalize(la, 300, n_snapshots=1, md=FAST_MD, seed=0)


def test_missing_gpaw_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpaw", None)
    with pytest.raises(MissingDependencyError, match="pip install"):
        datagen.dft_density(fcc_al(1))


def test_splits_are_deterministic_and_stratified():
    groups = [[f"g{g}-{i}" for i in range(10)] for g in range(4)]
    a = assign_splits(groups, fractions=(0.7, 0.15, 0.15), seed=3)
    assert a == assign_splits(groups, fractions=(0.7, 0.15, 0.15), seed=3)
    assert a != assign_splits(groups, fractions=(0.7, 0.15, 0.15), seed=4)
    values = list(a.values())
    assert (values.count("train"), values.count("validation"), values.count("test")) == (28, 6, 6)
    for g in groups:
        assert sum(a[n] == "train" for n in g) == 7
    half = assign_splits([["a", "b"], ["c", "d"], ["e", "f"]], fractions=(0.5, 0, 0.5), seed=0)
    for pair in (("a", "b"), ("c", "d"), ("e", "f")):
        assert sorted(half[n] for n in pair) == ["test", "train"]
    assert set(assign_splits(groups, fractions=(0, 0, 1), seed=0).values()) == {"test"}
    with pytest.raises(InputError, match="summing to 1"):
        assign_splits(groups, fractions=(0.5, 0.5, 0.5), seed=0)


def test_thermalize_is_seeded_and_reports_provenance():
    a = thermalize(fcc_al(1), 600, n_snapshots=2, md=FAST_MD, seed=7)
    b = thermalize(fcc_al(1), 600, n_snapshots=2, md=FAST_MD, seed=7)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    info = a[1][1]
    assert info["temperature_K"] == 600 and info["timestep_fs"] == 1.0 and info["time_ps"] == pytest.approx(0.03)
    assert info["potential_name"] == "emt" and info["melt"] is None
    melted = thermalize(fcc_al(1), 1200, n_snapshots=1, md=MDSettings(equilibration_ps=0.02, melt_above_K=1000,
                                                                         melt_ps=0.02), seed=7)
    assert melted[0][1]["melt"] == {"temperature_K": 2500.0, "duration_ps": 0.02}
    assert melted[0][1]["time_ps"] == pytest.approx(0.04)


def fake_dft(calls):
    def dft_density(atoms, *, settings, txt=None):
        calls.append(len(atoms))
        shape = settings.gpts_for(atoms.cell[:])
        n = 3.0 * len(atoms)
        rho = np.full(shape, n / atoms.get_volume())
        return rho, {"protocol": settings.protocol, "electron_integral": n, "n_electrons_expected": n,
                     "timing": {"wall_seconds": 1.0, "core_seconds": 1.0}}
    return dft_density


def test_generation_is_resumable_and_atomic(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(datagen, "dft_density", fake_dft(calls))
    variants = {"al4": fcc_al(1)}
    planned = []

    def plan():
        planned.append(1)
        return make_plan(variants, temperatures=[300, 600], snapshots_per_temperature=2, md=FAST_MD, seed=1)

    dft = DFTSettings(gpts=(8, 8, 8))
    request = {"what": "test"}
    out = tmp_path / "ds"
    datagen.generate(out, plan, request=request, dft=dft, max_snapshots=3, progress=None)
    assert len(calls) == 3 and len(read_manifest(out)["snapshots"]) == 3
    # A half-written temp file (killed run) is ignored; the rerun computes the rest only.
    (out / ".al4-T0600-01.npz.1234.tmp").write_bytes(b"partial")
    datagen.generate(out, plan, request=request, dft=dft, progress=None)
    assert len(calls) == 4 and planned == [1]
    snaps = load([out])
    assert sorted(s.name for s in snaps) == ["al4-T0300-00", "al4-T0300-01", "al4-T0600-00", "al4-T0600-01"]
    plan_json = json.loads((out / "plan.json").read_text())
    assert [p["name"] for p in plan_json["snapshots"]] == [
        "al4-T0300-00", "al4-T0600-00", "al4-T0300-01", "al4-T0600-01"]  # round-robin order
    assert snaps[0].provenance["thermalization"]["temperature_K"] == 300.0
    datagen.generate(out, plan, request=request, dft=dft, progress=None)
    assert len(calls) == 4
    with pytest.raises(InputError, match="other settings"):
        datagen.generate(out, plan, request={"what": "else"}, dft=dft, progress=None)
    # A plan made again with other configurations does not silently mix with the old snapshots.
    saved = json.loads((out / "plan.json").read_text())
    saved["snapshots"][0]["positions"][0][0] += 0.1
    (out / "plan.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="not the configuration of plan.json"):
        datagen.generate(out, plan, request=request, dft=dft, progress=None)


def test_lock_refuses_a_second_writer(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    import socket

    (out / datagen.LOCK_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")  # a live process
    with pytest.raises(InputError, match="another 'bigdens datagen'"):
        datagen.generate(out, lambda: [], request={}, progress=None)
    (out / datagen.LOCK_FILE).write_text(f"{socket.gethostname()} 999999999\n")  # stale
    datagen.generate(out, lambda: [], request={}, progress=None)
    assert not (out / datagen.LOCK_FILE).exists()


def run_serial(*args):
    # GPAW as the protocol runs it: one process, one thread (BLAS threads on a
    # busy 2-core machine slow it down tenfold).
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.gpaw
def test_end_to_end_al4_with_gpaw(tmp_path):
    pytest.importorskip("gpaw", reason="GPAW (the dft extra) is not installed")
    out = tmp_path / "al4"
    r = run_serial("-m", "bigdens", "datagen", "al", "--temperatures", "300", "--snapshots-per-temperature", "1",
                   "--equilibration", "0.05", "--kpts", "2", "2", "2", "--gpts", "16", "16", "16", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "[1/1] al4-T0300-00" in r.stdout and "12.000000 electrons" in r.stdout
    (snap,) = load([out])
    assert snap.density.shape == (16, 16, 16) and snap.density.dtype == np.float32
    assert abs(snap.electron_integral - 12.0) < 1e-4
    prov = snap.provenance
    assert prov["code"] == "GPAW" and prov["settings"]["setups"] == "hgh" and prov["settings"]["xc"] == "LDA"
    assert prov["settings"]["kpts"]["size"] == [2, 2, 2] and prov["timing"]["core_seconds"] > 0
    assert prov["thermalization"]["temperature_K"] == 300.0
    entry = read_manifest(out)["snapshots"][0]
    assert entry["dft_core_seconds"] > 0 and abs(entry["electron_integral"] - 12) < 1e-4

    # Grid convention (DESIGN §1): for the perfect lattice with an atom on the
    # origin, the density is inversion-symmetric about grid point (0, 0, 0).
    script = (
        "import numpy as np; from bigdens.datagen import dft_density, DFTSettings; "
        "from bigdens.structure import fcc_al; "
        "rho, _ = dft_density(fcc_al(1), settings=DFTSettings(kpts=(2, 2, 2), gpts=(16, 16, 16))); "
        f"np.save({str(tmp_path / 'rho.npy')!r}, rho)"
    )
    r = run_serial("-c", script)
    assert r.returncode == 0, r.stderr
    rho = np.load(tmp_path / "rho.npy")
    inv = rho[np.ix_(*[(-np.arange(16)) % 16] * 3)]
    assert np.abs(inv - rho).max() < 1e-8 * rho.max()
    assert np.abs(rho[::-1, ::-1, ::-1] - rho).max() > 1e-2 * rho.max()  # not about a half-step offset
