"""The format registry (bigdens.io.formats) as the single source, and the grid convention of every writer.

Every registered writer is checked through the registry alone (no format named in the test body): its
file round-trips through its reader, its example name is recognised as its format, and a Gaussian
centred on an atom displaced off the grid comes back centred on that atom (DESIGN §1: point (0, 0, 0)
on the cell origin, point (i, j, k) at i/n1·a1 + j/n2·a2 + k/n3·a3), read by bigdens and by ASE.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr

from bigdens.errors import InputError, SetupError
from bigdens.io import FORMATS, guess_format, read_density_file, write_density_file
from bigdens.io.formats import get_format, match_format, output_format, readable, writable

ALL_WRITABLE = [f.name for f in writable()]
#: The writers of real-space grid files that bigdens also reads back (pw.x's charge-density.dat is checked
#: against pw.x itself in tests/io/test_qe.py).
WRITABLE = [f.name for f in writable() if f.read]
#: Float rounding of each writer's printed digits (relative): cube and XSF "%.7E", CHGCAR "%17.11E".
DIGITS = {"cube": 1e-7, "xsf": 1e-7, "chgcar": 1e-10}


@pytest.fixture
def interleaved(rng):
    """Si and Ge interleaved (Si Ge Si Ge Ge) in a non-orthogonal cell, atoms at random."""
    cell = np.array([[4.3, 0.0, 0.0], [0.9, 3.8, 0.0], [-0.5, 0.6, 5.1]])
    return Atoms("SiGeSiGeGe", scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)


def test_registry_declares_each_format_once_with_its_functions():
    names = [f.name for f in FORMATS]
    assert len(names) == len(set(names)) and set(names) >= {"cube", "chgcar", "gpw", "xsf"}
    assert set(ALL_WRITABLE) == {"cube", "chgcar", "xsf", "qe"} and set(WRITABLE) == {"cube", "chgcar", "xsf"}
    for f in FORMATS:
        assert f.description and "\n" not in f.description and f.units
        if f.read:
            assert callable(f.reader)  # read_<name> found by convention
        else:
            with pytest.raises(InputError, match=f"bigdens cannot read {f.label} files"):
                f.reader
        if f.write:
            assert callable(f.writer) and f.write_axis in (0, 2)
        else:
            with pytest.raises(InputError, match=f"bigdens cannot write {f.label} files"):
                f.writer
        for pattern in f.patterns:  # each pattern names this format and no other
            name = pattern.replace("*", "x")
            assert match_format(name) is f and guess_format(name) == f.name and guess_format(name.upper()) == f.name


def test_suffixes_win_over_name_patterns():
    assert guess_format("CHGCAR") == guess_format("run1/CHGCAR") == guess_format("PARCHG.0012") == "chgcar"
    assert guess_format("CHGCAR.cube") == "cube" and guess_format("chgcar.xsf.gz") == "xsf"


def test_messages_list_the_formats_from_the_registry():
    with pytest.raises(InputError) as err:
        guess_format("al.xyz")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot tell the format of 'al.xyz' from its name")
    for f in readable():
        assert f.label in msg and all(p in msg for p in f.patterns)
    with pytest.raises(InputError, match="unknown density file format 'pdb'; use 'cube', 'chgcar', 'gpw' or 'xsf'"):
        get_format("pdb")
    with pytest.raises(InputError) as err:
        output_format("d.dat", option="--format")
    msg = str(err.value)
    assert msg.endswith("or choose one with --format " + ", ".join(ALL_WRITABLE[:-1]) + f" or {ALL_WRITABLE[-1]}")
    assert all(f.label in msg for f in writable()) and "GPAW" not in msg and ".gz" not in msg
    with pytest.raises(InputError, match=r"'d.gpw' names a GPAW restart file, which export does not write "
                                         r"\(`bigdens dft STORE -o FILE.gpw` starts"):
        output_format("d.gpw")
    with pytest.raises(InputError, match="bigdens cannot write GPAW restart files; use 'cube', 'chgcar', 'xsf' or 'qe'"):
        output_format("d.cube", "gpw")
    with pytest.raises(InputError, match="cannot write the compressed file 'd.cube.gz'"):
        output_format("d.cube.gz")
    assert issubclass(InputError, SetupError)  # exit 2 at the command line


def test_format_overrides_the_name():
    assert output_format("d.cube", "chgcar").name == "chgcar"
    assert output_format("anything", "XSF").name == "xsf"


@pytest.mark.parametrize("name", WRITABLE)
def test_every_writer_round_trips_through_its_reader(name, interleaved, rng):
    fmt = get_format(name, mode="w")
    rho = (0.01 + rng.random((4, 6, 7))).astype(np.float32)  # e/Å³; 4·6 = 24 values per plane: lines wrap
    path = fmt.example_name
    assert guess_format(path) == name
    assert write_density_file(path, interleaved, rho, comment="a test") is fmt
    back = read_density_file(path)
    assert back.provenance["source_format"] == name
    np.testing.assert_allclose(back.density, rho, rtol=DIGITS[name])
    np.testing.assert_allclose(back.cell, interleaved.cell[:], atol=1e-8)
    # The atoms survive as a set (a writer may reorder them: CHGCAR groups elements).
    key = lambda z, p: (int(z), *np.round(p, 6))  # noqa: E731
    assert sorted(map(key, back.numbers, back.positions)) == sorted(map(key, interleaved.numbers,
                                                                           interleaved.positions))
    volume = interleaved.get_volume()
    assert back.density.sum() * volume / rho.size == pytest.approx(rho.astype(np.float64).sum() * volume / rho.size,
                                                                   rel=1e-6)


def _gaussian(atoms, shape, centre, sigma=0.45):
    """A periodic Gaussian (e/Å³), shape ``shape``, centred on ``centre`` (Å): the images of the 27 nearest cells."""
    cell = atoms.cell[:]
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), axis=-1)
    r = frac @ cell
    rho = np.zeros(shape)
    for t in np.ndindex(3, 3, 3):
        d = r - (centre + (np.array(t) - 1) @ cell)
        rho += np.exp(-np.sum(d * d, axis=-1) / (2 * sigma**2))
    return rho / (2 * np.pi * sigma**2) ** 1.5


def _centroid_frac(rho):
    """Fractional position of a periodic field's centroid along each axis (circular mean), in [0, 1)."""
    out = []
    for axis, n in enumerate(rho.shape):
        marginal = rho.sum(axis=tuple(d for d in range(3) if d != axis))
        phase = np.exp(2j * np.pi * np.arange(n) / n)
        out.append((np.angle(np.sum(marginal * phase)) / (2 * np.pi)) % 1.0)
    return np.array(out)


def _assert_peak_on_atom(rho, cell, atom_position):
    # The centroid is the atom's fractional position (to 0.05 of a spacing); the largest value sits on the
    # grid point nearest to the atom (Cartesian, minimum image): a grid shifted by one point, by half a
    # spacing or stretched over n-1 intervals fails both.
    shape = np.array(rho.shape)
    atom_frac = np.linalg.solve(cell.T, atom_position) % 1.0
    off = (_centroid_frac(rho) - atom_frac + 0.5) % 1.0 - 0.5
    assert np.all(np.abs(off) * shape < 0.05), off * shape
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), axis=-1)
    d = (frac - atom_frac + 0.5) % 1.0 - 0.5
    d = np.min([np.linalg.norm((d + np.array(t) - 1) @ cell, axis=-1) for t in np.ndindex(3, 3, 3)], axis=0)
    assert np.unravel_index(np.argmax(rho), rho.shape) == np.unravel_index(np.argmin(d), d.shape)


def _ase_read(name, path):
    """(density e/Å³ (n1, n2, n3), Atoms) as ASE reads the file, independent of bigdens' readers."""
    if name == "cube":
        from ase.io.cube import read_cube_data

        data, atoms = read_cube_data(path)
        return data / Bohr**3, atoms
    if name == "chgcar":
        from ase.calculators.vasp import VaspChargeDensity

        c = VaspChargeDensity(path)
        return c.chg[0], c.atoms[0]
    if name == "xsf":
        from ase.io import read
        from ase.io.xsf import read_xsf

        with open(path) as fh:
            data, origin, span, _ = read_xsf(fh, read_data=True)
        assert np.allclose(origin, 0) and np.allclose(span, read(path).cell[:])
        return data[:-1, :-1, :-1] / Bohr**3, read(path)  # a general grid repeats its first planes
    raise AssertionError(f"no independent reader for {name!r}: add one here")


@pytest.mark.parametrize("name", WRITABLE)
def test_displaced_atom_peak_comes_back_on_the_atom(name):
    # One Si atom off every grid point and off every symmetric position, a Ge atom elsewhere; a Gaussian
    # on the Si atom. Written, then read back by bigdens and by ASE: the peak is on the Si atom as read.
    cell = np.array([[5.0, 0.0, 0.0], [1.1, 4.6, 0.0], [-0.7, 0.8, 5.4]])
    atoms = Atoms("GeSi", scaled_positions=[[0.8, 0.15, 0.1], [0.3137, 0.5521, 0.6893]], cell=cell, pbc=True)
    shape = (20, 18, 24)
    rho = _gaussian(atoms, shape, atoms.positions[1])
    _assert_peak_on_atom(rho, cell, atoms.positions[1])  # the test's own field is right
    fmt = get_format(name, mode="w")
    write_density_file(fmt.example_name, atoms, rho)
    ours = read_density_file(fmt.example_name)
    si = ours.positions[list(ours.numbers).index(14)]
    np.testing.assert_allclose(si, atoms.positions[1], atol=1e-6)
    _assert_peak_on_atom(ours.density, ours.cell, si)
    data, ase_atoms = _ase_read(name, fmt.example_name)
    assert data.shape == shape
    _assert_peak_on_atom(data, ase_atoms.cell[:], ase_atoms.positions[list(ase_atoms.numbers).index(14)])
    # The electrons: ∫ρ = 1 (a normalised Gaussian), as written and as read.
    dv = atoms.get_volume() / rho.size
    assert ours.density.sum() * dv == pytest.approx(rho.sum() * dv, rel=1e-6)
    assert rho.sum() * dv == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("name", WRITABLE)
def test_every_writer_streams_along_its_declared_axis(name, interleaved, rng):
    # What bigdens export relies on: a writer asks for [i] slabs (axis 0) or [:, :, k] planes (axis 2), as
    # the registry says, each once and in order, so a forward-only CheckedSlabs feeds it with one slab.
    fmt = get_format(name, mode="w")
    rho = rng.random((3, 4, 5))

    class ForwardOnly:
        shape = rho.shape

        def __init__(self):
            self.asked = []

        def __getitem__(self, key):
            key = key if isinstance(key, tuple) else (key,)
            key = key + (slice(None),) * (3 - len(key))
            (axis, index), = [(d, k) for d, k in enumerate(key) if k != slice(None)]
            assert axis == fmt.write_axis, (name, key)
            self.asked.append(index)
            return rho[key]

    src = ForwardOnly()
    write_density_file(fmt.example_name, interleaved, src)
    assert src.asked == list(range(rho.shape[fmt.write_axis]))
    np.testing.assert_allclose(read_density_file(fmt.example_name).density, rho, rtol=DIGITS[name])
