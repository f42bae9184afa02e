"""Structure builders, readers and validation."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import write

from bigdens import structure
from bigdens.errors import InputError


def test_fcc_al_counts_and_density():
    atoms = structure.fcc_al((3, 2, 1), a=4.0)
    assert len(atoms) == 4 * 6 and set(atoms.numbers) == {13}
    assert atoms.pbc.all()
    assert np.isclose(len(atoms) / atoms.get_volume(), 4 / 4.0**3)
    structure.validate(atoms)
    # Nearest-neighbour distance of FCC is a/√2.
    d = atoms.get_distances(0, range(1, len(atoms)), mic=True)
    assert np.isclose(d.min(), 4.0 / np.sqrt(2))


@pytest.mark.parametrize("x", [0.0, 0.3, 1.0])
def test_sige_composition_vegard_and_seed(x):
    atoms = structure.diamond_sige((2, 2, 2), x=x, seed=11)
    n = len(atoms)
    assert n == 64
    assert np.sum(atoms.numbers == 32) == round(x * n)
    a = (1 - x) * 5.431 + x * 5.658
    assert np.allclose(atoms.cell.lengths(), 2 * a)
    assert np.isclose(n / atoms.get_volume(), 8 / a**3)
    same = structure.diamond_sige((2, 2, 2), x=x, seed=11)
    assert (same.numbers == atoms.numbers).all()
    d = atoms.get_distances(0, range(1, n), mic=True)
    assert np.isclose(d.min(), a * np.sqrt(3) / 4)


def test_sige_seed_changes_sites():
    a = structure.diamond_sige((2, 2, 2), x=0.5, seed=1)
    b = structure.diamond_sige((2, 2, 2), x=0.5, seed=2)
    assert (a.numbers != b.numbers).any() and (a.numbers == 32).sum() == (b.numbers == 32).sum()


def test_defects_and_rattle():
    bulk = structure.fcc_al((3, 3, 3))
    vac = structure.remove_vacancies(bulk, 5, seed=3)
    assert len(vac) == len(bulk) - 5
    void = structure.carve_void(bulk, 3.0)
    centre = bulk.cell[:].sum(axis=0) / 2
    assert len(void) < len(bulk)
    assert np.linalg.norm(void.positions - centre, axis=1).min() > 3.0
    expected_removed = np.sum(np.linalg.norm(bulk.positions - centre, axis=1) <= 3.0)
    assert len(bulk) - len(void) == expected_removed
    sub = structure.substitute_cluster(structure.diamond_sige((3, 3, 3), x=0.0), 3.0, symbol="Ge")
    assert 0 < np.sum(sub.numbers == 32) < len(sub)
    r = structure.rattle(bulk, 0.1, seed=9)
    disp = r.positions - bulk.positions
    assert abs(disp.std() - 0.1) < 0.01 and abs(disp.mean()) < 0.01
    assert np.allclose(structure.rattle(bulk, 0.1, seed=9).positions, r.positions)


@pytest.mark.filterwarnings("ignore:structure file .* outside the cell")  # rattled atoms leave the cell
@pytest.mark.parametrize("fmt, name", [("extxyz", "s.xyz"), ("vasp", "POSCAR"), ("cif", "s.cif"), ("lammps-data", "s.lmp")])
def test_read_formats_roundtrip(fmt, name):
    atoms = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=1), 0.05)
    kw = {"specorder": ["Si", "Ge"], "masses": True} if fmt == "lammps-data" else {}
    write(name, atoms, format=fmt, **kw)
    back = structure.read(name, format="lammps-data" if fmt == "lammps-data" else None)
    assert len(back) == len(atoms) and back.pbc.all()
    assert np.allclose(back.cell[:], atoms.cell[:], atol=1e-5)
    # Same atoms at the same places, up to order and wrapping into the cell (CIF keeps fractions only).
    def key(a):
        return np.lexsort(np.round(a.get_scaled_positions(wrap=True), 4).T[::-1])

    d = back.get_scaled_positions(wrap=True)[key(back)] - atoms.get_scaled_positions(wrap=True)[key(atoms)]
    assert np.abs(d - np.round(d)).max() < 1e-4
    assert (back.numbers[key(back)] == atoms.numbers[key(atoms)]).all()


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        structure.read("nope.xyz")
    (tmp_path / "bad.xyz").write_text("this is not\na structure\n")
    with pytest.raises(InputError, match="structure file 'bad.xyz' is damaged: it does not parse as 'extxyz'"):
        structure.read("bad.xyz")


def test_read_says_what_is_wrong_with_the_file(tmp_path):
    """A folder, a damaged file of a known format, an unknown suffix and a generic one: four different messages."""
    import re

    al = structure.fcc_al((1, 1, 1))
    (tmp_path / "folder.xyz").mkdir()
    with pytest.raises(InputError, match=r"^structure file 'folder.xyz' is a directory; give a structure file"):
        structure.read("folder.xyz")

    def error(name, **kw):
        with pytest.raises(InputError) as info:
            structure.read(name, **kw)
        text = str(info.value)
        assert "\n" not in text
        return text

    # Known formats that fail to parse: damaged, which format, the parser's words; no --format advice.
    write("good.xyz", [al, al])
    (tmp_path / "cut.xyz").write_text("".join((tmp_path / "good.xyz").read_text().splitlines(True)[:-2]))
    write("POSCAR", al, format="vasp")
    (tmp_path / "POSCAR").write_text("\n".join((tmp_path / "POSCAR").read_text().splitlines()[:4]) + "\n")
    for name, fmt in (("cut.xyz", "extxyz"), ("POSCAR", "vasp")):
        msg = error(name)
        assert msg.startswith(f"structure file {name!r} is damaged: it does not parse as {fmt!r} (")
        assert "lammps-data" not in msg and "--format" not in msg
    # An unknown suffix: ASE cannot guess, so name the format.
    write("al.lmp", al, format="lammps-data", masses=True)
    assert error("al.lmp") == ("cannot tell the format of structure file 'al.lmp' (ASE knows no format 'lmp' for "
                               "its name); name it with --format, e.g. --format lammps-data")
    # A generic suffix ASE maps to some exotic format: the guess failed, so name the format.
    write("al.data", al, format="lammps-data", masses=True)
    assert re.fullmatch(r"structure file 'al.data' holds no structure that ASE's 'runnerdata' reader finds; "
                        r"name the format with --format, e.g. --format lammps-data", error("al.data"))
    for name in ("al.lmp", "al.data"):  # and named, they read
        assert len(structure.read(name, format="lammps-data")) == 4
    # A named format that does not fit the file.
    msg = error("cut.xyz", format="lammps-data")
    assert msg.startswith("cannot read structure file 'cut.xyz' as --format 'lammps-data' (")
    assert msg.endswith("); the file is damaged or not in that format")


def test_multi_frame_file_gives_its_last_frame_and_says_so(tmp_path):
    import warnings

    frames = [structure.rattle(structure.fcc_al((1, 1, 1)), 0.05, seed=i) for i in range(3)]
    for f in frames:
        f.wrap()
    write("traj.xyz", frames)
    with pytest.warns(UserWarning) as record:
        atoms = structure.read("traj.xyz")
    assert [str(w.message) for w in record] == ["structure file 'traj.xyz' has 3 frames; using the last (frame 2)"]
    np.testing.assert_allclose(atoms.positions, frames[2].positions, atol=1e-6)
    assert not np.allclose(atoms.positions, frames[1].positions, atol=1e-3)
    write("one.xyz", frames[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one frame: nothing to say
        np.testing.assert_allclose(structure.read("one.xyz").positions, frames[0].positions, atol=1e-6)
        assert len(structure.read("traj.xyz", index=0)) == 4  # an explicit frame: no note either


def test_describe_shows_the_frame_note_as_one_line(tmp_path, capsys):
    from bigdens.cli import main

    frames = [structure.fcc_al((1, 1, 1)) for _ in range(2)]
    frames[1].positions[0] -= [4.05, 0.0, 0.0]  # and one atom a whole cell outside it
    write("traj.xyz", frames)
    assert main(["describe", "traj.xyz", "--grid", "4", "4", "4", "--m", "4", "--k", "2"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "bigdens describe: warning: structure file 'traj.xyz' has 2 frames; using the last (frame 1)",
        "bigdens describe: warning: structure file 'traj.xyz': 1 atom(s) lie far outside the cell (fractional "
        "coordinates outside [-0.5, 1.5), first: atom 0); they are wrapped into it (each stands for its periodic "
        "image in the cell)",
    ]
    assert "structure: 4 atoms" in out


def test_atoms_outside_the_cell_are_noted_and_act_as_their_images_inside(tmp_path):
    """Positions are kept as in the file; the note counts the atoms; every consumer wraps them (cell list)."""
    from bigdens import descriptors
    from bigdens.grid import make_grid

    inside = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=1), 0.05, seed=2)
    inside.wrap()
    outside = inside.copy()
    outside.positions[3] += inside.cell[0] * 2 - inside.cell[2]
    outside.positions[5] -= 2 * inside.cell[1]
    write("out.xyz", outside)
    with pytest.warns(UserWarning, match=r"^structure file 'out.xyz': 2 atom\(s\) lie far outside the cell "
                                         r"\(fractional coordinates outside \[-0.5, 1.5\), first: atom 3\); they "
                                         r"are wrapped into it"):
        got = structure.read("out.xyz")
    np.testing.assert_allclose(got.positions, outside.positions, atol=1e-6)  # kept where they were
    structure.validate(got)
    params = descriptors.default_params(got.numbers)
    points = make_grid(got.cell[:], shape=(6, 6, 6)).points((0, 0, 0), (6, 6, 6)).reshape(-1, 3)
    a = descriptors.compute(got.positions, got.numbers, got.cell[:], points, params)
    b = descriptors.compute(inside.positions, inside.numbers, inside.cell[:], points, params)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_describe_refuses_zero_and_negative_descriptor_settings(tmp_path, capsys):
    from bigdens.cli import main

    write("al.xyz", structure.fcc_al((1, 1, 1)))
    for flags, want in ((["--m", "0"], "each radial count M must be within 1..256, got m=(0,)"),
                        (["--m", "-2"], "each radial count M must be within 1..256, got m=(-2,)"),
                        (["--k", "-1"], "each angular count K must be within 0..16, got k=(-1,)"),
                        (["--r-cut", "0"], "r_cut must be a positive number of Å, got 0.0"),
                        (["--r-cut", "nan"], "r_cut must be a positive number of Å, got nan"),
                        (["--max-blocks", "0"], "--max-blocks must be >= 1 (blocks to compute), got 0")):
        assert main(["describe", "al.xyz", "--grid", "8", "8", "8", "--block", "4", *flags]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"bigdens describe: error: {want}\n"
    # --m 8 and --k 0 are honoured (not replaced by the defaults 32 and 6)
    assert main(["describe", "al.xyz", "--grid", "8", "8", "8", "--block", "4", "--m", "8", "--k", "0"]) == 0
    assert "M (8,), K (0,)" in capsys.readouterr().out


def test_validate_errors():
    atoms = structure.fcc_al((1, 1, 1))
    with pytest.raises(InputError, match="empty"):
        structure.validate(atoms[:0])
    bad = atoms.copy()
    bad.positions[2, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        structure.validate(bad)
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.2, 0.1, 0.0]
    with pytest.raises(InputError, match="closer|Å from atom"):
        structure.validate(close)
    flat = atoms.copy()
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    with pytest.raises(InputError, match="singular"):
        structure.validate(flat)
    mol = atoms.copy()
    mol.pbc = [True, True, False]
    with pytest.raises(InputError, match="periodic in all three"):
        structure.validate(mol)
    tiny = atoms[:1]
    tiny.set_cell(np.eye(3) * 0.4)
    with pytest.raises(InputError, match="image of itself"):
        structure.validate(tiny)


def test_builder_argument_errors():
    with pytest.raises(InputError, match="within \\[0, 1\\]"):
        structure.diamond_sige((1, 1, 1), x=1.5)
    with pytest.raises(InputError, match="positive integers"):
        structure.fcc_al((0, 1, 1))
    with pytest.raises(InputError, match="vacancies"):
        structure.remove_vacancies(structure.fcc_al(1), 4)
    with pytest.raises(InputError, match="removes every atom"):
        structure.carve_void(structure.fcc_al(1), 100.0)


def test_four_million_atoms_build_in_well_under_30_s():
    # 100³ conventional cells of FCC Al: 4,000,000 atoms, vectorised (issue 2 asks for well under 30 s).
    import time

    t = time.perf_counter()
    atoms = structure.fcc_al((100, 100, 100))
    elapsed = time.perf_counter() - t
    assert len(atoms) == 4_000_000 and atoms.positions.dtype == np.float64
    assert elapsed < 15.0, f"building 4,000,000 atoms took {elapsed:.1f} s"
    assert np.isclose(len(atoms) / atoms.get_volume(), 4 / 4.05**3)
    assert np.allclose(atoms.positions.max(axis=0), 99.5 * 4.05)


def _skewed_cell(atoms, seed):
    # The same structure in a strongly sheared cell (a lattice-equivalent would keep images; this changes them).
    out = structure.rattle(atoms, 0.05, seed=seed)
    cell = out.cell[:].copy()
    cell[1] += 0.9 * cell[0]
    cell[2] += 0.8 * cell[0] + 0.7 * cell[1]
    out.set_cell(cell, scale_atoms=True)
    return out


def _brute_within(atoms, center, radius):
    # Any image within radius: try every shift that can reach (independent of structure._within).
    from itertools import product

    cell = atoms.cell[:]
    reach = np.ceil(radius * np.linalg.norm(np.linalg.inv(cell), axis=0)).astype(int) + 2
    shifts = np.array(list(product(*(range(-r, r + 1) for r in reach)))) @ cell
    d = np.linalg.norm(atoms.positions[:, None, :] + shifts[None] - center, axis=2).min(axis=1)
    return d <= radius


@pytest.mark.parametrize("radius", [1.5, 4.0, 5.0])
def test_void_and_cluster_exact_in_skewed_cells(radius):
    # Radii below and above half the lattice-plane spacing of a sheared cell: every image counts.
    atoms = _skewed_cell(structure.fcc_al((3, 2, 2)), seed=5)
    center = np.array([1.0, 2.0, 3.0])
    want = _brute_within(atoms, center, radius)
    assert 0 < want.sum() < len(atoms)
    void = structure.carve_void(atoms, radius, center=center)
    assert len(void) == len(atoms) - want.sum()
    assert np.allclose(void.positions, atoms.positions[~want])
    sub = structure.substitute_cluster(atoms, radius, symbol="Cu", center=center)
    assert ((sub.numbers == 29) == want).all()


def test_builders_refuse_bad_values_with_one_clear_error():
    al = structure.fcc_al(1)
    for a in (0.0, -4.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="lattice constant must be > 0 Å"):
            structure.fcc_al(1, a=a)
        with pytest.raises(InputError, match="lattice constant must be > 0 Å"):
            structure.diamond_sige(1, x=0.5, a=a)
    for seed in (-1, 1.5, "7"):
        with pytest.raises(InputError, match="seed must be an integer >= 0"):
            structure.diamond_sige(1, x=0.5, seed=seed)
        with pytest.raises(InputError, match="seed must be an integer >= 0"):
            structure.remove_vacancies(al, 1, seed=seed)
        with pytest.raises(InputError, match="seed must be an integer >= 0"):
            structure.rattle(al, 0.1, seed=seed)
    for r in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="void radius must be > 0 Å"):
            structure.carve_void(al, r)
        with pytest.raises(InputError, match="cluster radius must be > 0 Å"):
            structure.substitute_cluster(al, r, symbol="Cu")
    for rms in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="rattle amplitude must be >= 0 Å"):
            structure.rattle(al, rms)
    with pytest.raises(InputError, match="vacancies"):
        structure.remove_vacancies(al, 1.5)
    with pytest.raises(InputError, match="unknown chemical element 'Xx'"):
        structure.substitute_cluster(al, 2.0, symbol="Xx")


def test_check_cell():
    assert structure.check_cell(np.eye(3) * 4.0).dtype == np.float64
    for bad in (np.zeros((3, 3)), [[4, 0, 0], [0, 4, 0], [4, 0, 0]], np.diag([np.inf, 4.0, 4.0]), np.full((3, 3), np.nan)):
        with pytest.raises(InputError, match="the cell is singular"):
            structure.check_cell(bad)
    with pytest.raises(InputError, match="3×3"):
        structure.check_cell(np.eye(2))


def test_build_writes_rattled_atoms_inside_the_cell(tmp_path, capsys):
    import warnings

    from bigdens.cli import main

    assert main(["build", "al", "--cells", "2", "2", "2", "--rattle", "0.1", "--seed", "3", "-o", "r.xyz"]) == 0
    rattled = structure.rattle(structure.fcc_al((2, 2, 2)), 0.1, seed=3)
    f = rattled.get_scaled_positions(wrap=False)
    assert ((f < 0) | (f >= 1)).any()  # the builder's atoms leave the cell ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... the written file has them wrapped: no note
        got = structure.read("r.xyz")
    d = got.get_scaled_positions(wrap=False) - rattled.get_scaled_positions(wrap=False)
    assert np.abs(d - np.round(d)).max() < 1e-6  # the same atoms, by whole lattice vectors
