"""VASP CHGCAR reader and writer: ρ·V_cell, Fortran order, species grouped, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.vasp import VaspChargeDensity

from bigdens.errors import InputError
from bigdens.io import read_density_file
from bigdens.io.chgcar import read_chgcar, species_order, write_chgcar


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


# -- the writer ------------------------------------------------------------------------------------

@pytest.fixture
def interleaved(rng):
    """Si and Ge interleaved (Si Ge Si Ge Ge) in a non-orthogonal cell, atoms at random."""
    cell = np.array([[4.2, 0.0, 0.0], [0.7, 3.9, 0.0], [-0.4, 0.5, 5.6]])
    return Atoms("SiGeSiGeGe", scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)


def test_writer_layout_is_vasps(interleaved, rng):
    # Read without any CHGCAR reader: the POSCAR block, a blank line, the grid, then rho*V with x fastest,
    # five values per line (the last line shorter), as VASP writes it and reads it with ICHARG=1.
    rho = rng.random((4, 3, 7)).astype(np.float32)  # 84 values: 16 full lines and one of 4
    write_chgcar("CHGCAR", interleaved, rho, comment="a comment")
    lines = open("CHGCAR").read().splitlines()
    assert lines[0] == "a comment" and float(lines[1]) == 1.0
    np.testing.assert_array_equal(np.array([ln.split() for ln in lines[2:5]], dtype=float), interleaved.cell[:])
    assert lines[5].split() == ["Si", "Ge"] and lines[6].split() == ["2", "3"] and lines[7] == "Direct"
    assert lines[13] == "" and lines[14].split() == ["4", "3", "7"]
    rows = [ln.split() for ln in lines[15:]]
    assert [len(r) for r in rows] == [5] * 16 + [4]
    assert all(len(v.split("E")[0].replace("-", "").replace(".", "")) == 12 for r in rows for v in r)  # %.11E
    values = np.array([v for r in rows for v in r], dtype=float)
    volume = interleaved.get_volume()
    np.testing.assert_allclose(values, (rho.astype(np.float64) * volume).ravel(order="F"), rtol=1e-11)


def test_writer_groups_interleaved_species(interleaved):
    elements, order = species_order(interleaved.numbers)
    assert elements == [14, 32] and order.tolist() == [0, 2, 1, 3, 4]
    write_chgcar("CHGCAR", interleaved, np.ones((2, 2, 2)))
    lines = open("CHGCAR").read().splitlines()
    frac = np.array([ln.split() for ln in lines[8:13]], dtype=float)
    np.testing.assert_allclose(frac @ interleaved.cell[:], interleaved.positions[[0, 2, 1, 3, 4]], atol=1e-12)


def test_writer_round_trip_through_ase_and_bigdens(interleaved, rng):
    rho = (0.02 + rng.random((5, 6, 7))).astype(np.float32)  # e/Å³, as a store holds it
    volume = interleaved.get_volume()
    electrons = float(rho.astype(np.float64).sum()) * volume / rho.size
    write_chgcar("CHGCAR", interleaved, rho)
    grouped = interleaved[[0, 2, 1, 3, 4]]
    # ASE: the structure with its POSCAR parser (ase.io.read(format="vasp") of 3.29 takes the grid line
    # after the blank line for velocities, in its own CHGCARs too), the density with VaspChargeDensity.
    from ase.io.vasp import read_vasp_configuration

    with open("CHGCAR") as fh:
        poscar = read_vasp_configuration(fh)
    ase_chg = VaspChargeDensity("CHGCAR")
    for a in (poscar, ase_chg.atoms[0]):
        assert a.get_chemical_symbols() == ["Si", "Si", "Ge", "Ge", "Ge"]
        np.testing.assert_allclose(a.cell[:], interleaved.cell[:], atol=1e-12)
        np.testing.assert_allclose(a.positions, grouped.positions, atol=1e-12)
    np.testing.assert_allclose(ase_chg.chg[0], rho, rtol=1e-10)  # 12 digits: float rounding of float32 values
    assert ase_chg.chg[0].sum() * volume / rho.size == pytest.approx(electrons, rel=1e-6)
    # bigdens' own reader.
    f = read_chgcar("CHGCAR")
    np.testing.assert_allclose(f.density, rho, rtol=1e-10)
    np.testing.assert_allclose(f.cell, interleaved.cell[:], atol=1e-12)
    np.testing.assert_allclose(f.positions, grouped.positions, atol=1e-12)
    assert f.numbers.tolist() == [14, 14, 32, 32, 32]
    assert f.density.sum() * abs(np.linalg.det(f.cell)) / rho.size == pytest.approx(electrons, rel=1e-6)


def test_writer_round_trip_through_pymatgen(interleaved, rng):
    # pymatgen's Chgcar (what bader, pymatgen and atomate users read CHGCARs with): the same structure,
    # species grouped, and ρ·V_cell on the same grid, x fastest; its own integral is the electron count.
    from pymatgen.io.vasp.outputs import Chgcar

    rho = (0.02 + rng.random((5, 6, 7))).astype(np.float32)
    write_chgcar("CHGCAR", interleaved, rho)
    chg = Chgcar.from_file("CHGCAR")
    grouped = interleaved[[0, 2, 1, 3, 4]]
    assert [str(s.specie) for s in chg.structure] == ["Si", "Si", "Ge", "Ge", "Ge"]
    np.testing.assert_allclose(chg.structure.lattice.matrix, interleaved.cell[:], atol=1e-12)
    np.testing.assert_allclose(chg.structure.cart_coords, grouped.positions, atol=1e-10)
    volume = interleaved.get_volume()
    np.testing.assert_allclose(chg.data["total"], rho.astype(np.float64) * volume, rtol=1e-10)
    electrons = float(rho.astype(np.float64).sum()) * volume / rho.size
    assert chg.data["total"].sum() / rho.size == pytest.approx(electrons, rel=1e-9)  # pymatgen's Σ ρV / N


def test_writer_streams_planes_along_z_once_in_order(interleaved, rng):
    rho = rng.random((3, 4, 5))

    class Planes:  # only shape and [:, :, k]: what CheckedSlabs(axis=2) gives
        shape = rho.shape

        def __init__(self):
            self.asked = []

        def __getitem__(self, key):
            assert key[:2] == (slice(None), slice(None)), key
            self.asked.append(key[2])
            return rho[key]

    src = Planes()
    write_chgcar("CHGCAR", interleaved, src)
    assert src.asked == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(read_chgcar("CHGCAR").density, rho, rtol=1e-11)


def test_writer_refuses_what_vasp_cannot_hold(interleaved):
    with pytest.raises(InputError, match="CHGCAR data must be a 3-D grid"):
        write_chgcar("CHGCAR", interleaved, np.zeros((4, 4)))
    with pytest.raises(InputError, match="without atoms"):
        write_chgcar("CHGCAR", Atoms(cell=np.eye(3) * 3, pbc=True), np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="without a 3-D cell"):
        write_chgcar("CHGCAR", Atoms("Si", cell=np.zeros((3, 3))), np.zeros((2, 2, 2)))
