"""VASP CHGCAR reader: ρ·V_cell, Fortran order, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.vasp import VaspChargeDensity

from bigdens.errors import InputError
from bigdens.io import read_density_file
from bigdens.io.chgcar import read_chgcar


@pytest.fixture
def atoms(rng):
    cell = np.array([[4.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.0, 0.4, 6.0]])
    return Atoms("Si2Ge", scaled_positions=rng.random((3, 3)), cell=cell, pbc=True)


def write_with_ase(path, atoms, rho):
    # ASE's writer takes ρ (e/Å³) and stores ρ·V in Fortran order.
    c = VaspChargeDensity(None)
    c.atoms = [atoms]
    c.chg = [np.asarray(rho, dtype=np.float64)]
    c.write(path, format="chgcar")


def test_round_trip_with_ase_writer(atoms, rng):
    rho = rng.random((4, 5, 6))
    write_with_ase("CHGCAR", atoms, rho)
    f = read_density_file("CHGCAR")
    np.testing.assert_allclose(f.density, rho, rtol=1e-9)
    np.testing.assert_allclose(f.cell, atoms.cell[:], atol=1e-12)
    np.testing.assert_allclose(f.positions, atoms.positions, atol=1e-9)
    assert f.numbers.tolist() == [14, 14, 32]


def test_hand_written_file_order_and_units():
    # 2×3×1 grid over a 2×2×2 Å cube (V = 8 Å³); values ρ·V with x fastest.
    values = np.arange(1, 7, dtype=float) * 8.0
    text = "\n".join([
        "test", "1.0", "2 0 0", "0 2 0", "0 0 2", "Al", "1", "Direct", "0 0 0", "",
        "2 3 1", " ".join(f"{v:.6f}" for v in values), "augmentation occupancies 1 4", " 0.1 0.2 0.3 0.4", "",
    ])
    open("CHGCAR", "w").write(text)
    f = read_chgcar("CHGCAR")
    assert f.density.shape == (2, 3, 1)
    # value index = i + 2*j (Fortran), density = value / V
    for i in range(2):
        for j in range(3):
            assert f.density[i, j, 0] == pytest.approx(1 + i + 2 * j)


def test_vasp4_and_cartesian_and_scale():
    text = "\n".join([
        "Al", "2.0", "1 0 0", "0 1 0", "0 0 1", "1", "Cartesian", "0.5 0 0", "", "1 1 2", "16 16", "",
    ])
    open("CHGCAR", "w").write(text)
    f = read_chgcar("CHGCAR")
    np.testing.assert_allclose(f.cell, 2 * np.eye(3))
    np.testing.assert_allclose(f.positions, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(f.density, np.full((1, 1, 2), 2.0))


def test_truncated(atoms, rng):
    write_with_ase("CHGCAR", atoms, rng.random((4, 4, 4)))
    lines = open("CHGCAR").read().splitlines()
    header_end = next(i for i, line in enumerate(lines) if line.split() == ["4", "4", "4"])
    open("cut_CHGCAR", "w").write("\n".join(lines[: header_end + 3]))
    with pytest.raises(InputError, match="truncated"):
        read_chgcar("cut_CHGCAR")
    open("cut2_CHGCAR", "w").write("\n".join(lines[:6]))
    with pytest.raises(InputError, match="CHGCAR file"):
        read_chgcar("cut2_CHGCAR")


def test_grid_not_matching_header(atoms, rng):
    write_with_ase("CHGCAR", atoms, rng.random((4, 4, 4)))
    text = open("CHGCAR").read().replace("    4    4    4", "    4    4    3", 1)
    assert text != open("CHGCAR").read()
    open("bad_CHGCAR", "w").write(text)
    with pytest.raises(InputError, match="does not match its header"):
        read_chgcar("bad_CHGCAR")


def test_unknown_elements():
    text = "\n".join(["x", "1.0", "1 0 0", "0 1 0", "0 0 1", "1", "Direct", "0 0 0", "", "1 1 1", "1.0", ""])
    open("CHGCAR", "w").write(text)
    with pytest.raises(InputError, match="element names"):
        read_chgcar("CHGCAR")
