"""Gaussian cube reader/writer: units, grid convention, round trips, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.io.cube import read_cube_data, write_cube as ase_write_cube
from ase.units import Bohr

from bigdens.errors import InputError
from bigdens.io import read_density_file
from bigdens.io.cube import BOHR, read_cube, write_cube


@pytest.fixture
def atoms(rng):
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.3, 0.2, 5.0]])  # not orthogonal
    return Atoms("AlSi", scaled_positions=rng.random((2, 3)), cell=cell, pbc=True)


def test_bohr_constant_matches_ase():
    assert BOHR == pytest.approx(Bohr, rel=1e-12)


def test_round_trip_through_ase_reader(atoms, rng):
    rho = rng.random((6, 7, 9)).astype(np.float32)  # e/Å³
    write_cube("a.cube", atoms, rho)
    data, back = read_cube_data("a.cube")
    # ASE returns the raw file values: e/Bohr³.
    np.testing.assert_allclose(data / Bohr**3, rho, rtol=1e-6)
    np.testing.assert_allclose(back.cell[:], atoms.cell[:], atol=1e-8)
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-7)
    np.testing.assert_array_equal(back.numbers, atoms.numbers)


def test_reads_ase_written_cube_with_unit_conversion(atoms, rng):
    rho_bohr = rng.random((5, 4, 6))  # e/Bohr³, as a cube should hold
    ase_write_cube(open("b.cube", "w"), atoms, data=rho_bohr)
    f = read_cube("b.cube")
    np.testing.assert_allclose(f.density, rho_bohr / Bohr**3, rtol=1e-6)
    np.testing.assert_allclose(f.cell, atoms.cell[:], atol=1e-5)  # ASE writes 6 decimals
    np.testing.assert_allclose(f.positions, atoms.positions, atol=1e-5)
    # The same file read as e/Å³ values (ASE-written GPAW densities) is not converted.
    g = read_cube("b.cube", density_units="e/A^3")
    np.testing.assert_allclose(g.density, rho_bohr, rtol=1e-6)


def test_integral_is_conserved(atoms):
    # A uniform density of 0.1 e/Å³ integrates to 0.1·V in both unit systems.
    rho = np.full((4, 4, 4), 0.1)
    write_cube("u.cube", atoms, rho)
    data, _ = read_cube_data("u.cube")
    vol_bohr = atoms.get_volume() / Bohr**3
    assert data.mean() * vol_bohr == pytest.approx(0.1 * atoms.get_volume(), rel=1e-6)
    f = read_cube("u.cube")
    assert f.density.mean() * atoms.get_volume() == pytest.approx(0.1 * atoms.get_volume(), rel=1e-6)


def test_grid_point_zero_on_origin(atoms):
    # A density peaked on grid point (2, 1, 3): after a round trip it stays
    # there, and the grid spacing is a_i / n_i (no n_i + 1 end point).
    rho = np.zeros((5, 6, 7))
    rho[2, 1, 3] = 1.0
    write_cube("p.cube", atoms, rho)
    f = read_cube("p.cube")
    assert np.unravel_index(np.argmax(f.density), f.density.shape) == (2, 1, 3)
    np.testing.assert_allclose(f.cell, atoms.cell[:], atol=1e-8)


def test_nonzero_origin_shifts_atoms(atoms, rng):
    rho = rng.random((3, 3, 3))
    ase_write_cube(open("o.cube", "w"), atoms, data=rho, origin=(1.0, 0.5, -0.25))
    f = read_cube("o.cube")
    np.testing.assert_allclose(f.positions, atoms.positions - [1.0, 0.5, -0.25], atol=1e-5)
    np.testing.assert_allclose(f.provenance["origin_A"], [1.0, 0.5, -0.25], atol=1e-5)


def test_streaming_writer_reads_slabs(atoms, rng):
    rho = rng.random((4, 5, 13))

    class Slabs:  # only shape and [i]: what a zarr or memmap array gives
        shape = rho.shape

        def __init__(self):
            self.calls = []

        def __getitem__(self, i):
            self.calls.append(i)
            return rho[i]

    src = Slabs()
    write_cube("s.cube", atoms, src)
    assert src.calls == [0, 1, 2, 3]
    np.testing.assert_allclose(read_cube("s.cube").density, rho, rtol=1e-7)


def test_truncated_cube_is_one_clear_error(atoms, rng):
    write_cube("t.cube", atoms, rng.random((4, 4, 4)))
    text = open("t.cube").read()
    open("cut.cube", "w").write(text[: len(text) - 200])
    with pytest.raises(InputError, match="truncated"):
        read_cube("cut.cube")
    open("cut2.cube", "w").write("\n".join(text.splitlines()[:4]))
    with pytest.raises(InputError, match="cube file"):
        read_cube("cut2.cube")


def test_grid_not_matching_header(atoms, rng):
    write_cube("m.cube", atoms, rng.random((4, 4, 4)))
    open("m.cube", "a").write(" 1.0 2.0\n")
    with pytest.raises(InputError, match="does not match its header"):
        read_cube("m.cube")


def test_writer_refuses_bad_shape(atoms):
    with pytest.raises(InputError, match="3-D grid"):
        write_cube("x.cube", atoms, np.zeros((4, 4)))


def test_read_density_file_dispatch(atoms, rng, tmp_path):
    write_cube("d.cube", atoms, rng.random((3, 3, 3)))
    assert read_density_file("d.cube").density.shape == (3, 3, 3)
    open("thing.dat", "w").write("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_density_file("thing.dat")
    with pytest.raises(InputError, match="does not exist"):
        read_density_file("missing.cube")
