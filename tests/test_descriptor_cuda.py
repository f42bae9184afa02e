"""The CUDA descriptor kernel (bigdens._descriptor_cuda) against the CPU kernel.

Without a GPU the kernel runs in numba's CUDA simulator.  numba reads
``NUMBA_ENABLE_CUDASIM`` when it is first imported, and this test process has
imported numba already, so the simulated features are computed by this file
run as a script in a subprocess (``python tests/test_descriptor_cuda.py OUT.npz``)
with the variable set; the tests compare them with the CPU kernel's
:func:`bigdens.descriptors.compute_block` here.  The simulator does the
float64 arithmetic of the kernel in numpy without fused multiply-adds, as the
CPU kernel does, so the features must be equal bit for bit; the cases cover
one and two species, the cross block, padding (fewer than M or K atoms within
r_cut), a species with K = 0, a triclinic cell, a perfect crystal (exact
distance ties and grid points on atoms), and points far outside the atom
images or with no atom images at all.

On a real GPU (``@pytest.mark.cuda``, skipped without one) the features are
compared to float32 rounding, and the result is wrapped by torch without a copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def cases() -> dict:
    """Name -> (atoms, DescriptorParams, grid shape, block edge, block number); small: the simulator is slow."""
    from bigdens import structure
    from bigdens.descriptors import DescriptorParams

    al = structure.rattle(structure.fcc_al((2, 2, 2)), 0.06, seed=1)
    sige = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=2), 0.05, seed=3)
    tri = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=4), 0.05, seed=5)
    cell = tri.cell[:].copy()
    cell[1] += 0.35 * cell[0]
    cell[2] += -0.2 * cell[0] + 0.3 * cell[1]
    tri.set_cell(cell, scale_atoms=True)
    perfect = structure.fcc_al((1, 1, 1))
    return {
        # One species; K < M; the block at the cell's corner (halo images on every side).
        "al-rattled": (al, DescriptorParams(species=(13,), m=(32,), k=(6,), r_cut=5.0, cross=True),
                       (9, 10, 11), 6, 0),
        # Two species with the cross block (K_Si·K_Ge = 20 products), unequal M and K.
        "sige-cross": (sige, DescriptorParams(species=(14, 32), m=(24, 20), k=(5, 4), r_cut=5.5, cross=True),
                       (8, 8, 8), (5, 6, 7), 0),
        # r_cut 2.9 Å: about 7 atoms within it on average, so many points have fewer than M = 16
        # (radial part padded with r_cut) and some fewer than K = 8 (products 0).
        "padding": (al, DescriptorParams(species=(13,), m=(16,), k=(8,), r_cut=2.9), (9, 10, 11), 6, 5),
        # Triclinic cell, two species, the cross block; Ge with K = 0 (no Ge angular part, empty cross block).
        "triclinic": (tri, DescriptorParams(species=(14, 32), m=(20, 12), k=(4, 0), r_cut=5.0, cross=True),
                      (9, 10, 11), 5, 7),
        "triclinic-k": (tri, DescriptorParams(species=(14, 32), m=(12, 20), k=(3, 5), r_cut=4.5, cross=True),
                        (9, 10, 11), 5, 1),
        # Perfect FCC, grid points on atoms and on symmetric sites: exact ties, d = 0 and u = 0.
        "perfect": (perfect, DescriptorParams(species=(13,), m=(20,), k=(6,), r_cut=4.5), (8, 8, 8), 8, 0),
    }


def point_cases() -> dict:
    """Name -> (points, atom images, species indices, params) for :func:`compute_points_cuda` directly."""
    from bigdens.descriptors import DescriptorParams

    rng = np.random.default_rng(7)
    atoms = rng.uniform(0.0, 8.0, size=(40, 3))
    species = rng.integers(0, 2, size=40)
    params = DescriptorParams(species=(14, 32), m=(6, 5), k=(3, 2), r_cut=3.5, cross=True)
    # Points inside the cloud, at its edges, and far outside it on every side (bin search clipped or empty).
    points = np.concatenate([rng.uniform(-1.0, 9.0, size=(60, 3)), rng.uniform(-30.0, 40.0, size=(40, 3))])
    return {
        "points-scattered": (points, atoms, species, params),
        "points-no-atoms": (points[:20], np.zeros((0, 3)), np.zeros(0, dtype=np.int64), params),
        "points-one-species": (points, atoms[species == 0], species[species == 0], params),
    }


def halo_and_block(name: str):
    """The halo, grid, block and params of case ``name``."""
    from bigdens.blocks import block_halo, make_blocks
    from bigdens.celllist import build_cell_list
    from bigdens.grid import make_grid

    atoms, params, shape, edge, number = cases()[name]
    grid = make_grid(atoms.cell[:], shape=shape)
    block = make_blocks(grid.shape, edge)[number]
    halo = block_halo(build_cell_list(atoms.cell[:], atoms.positions), atoms.numbers, grid, block, params.r_cut)
    return halo, grid, block, params


def cpu_features(name: str) -> np.ndarray:
    from bigdens.descriptors import compute_block

    return compute_block(*halo_and_block(name))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Case name -> the CUDA kernel's features in numba's CUDA simulator (one subprocess for all cases)."""
    out = tmp_path_factory.mktemp("cudasim") / "features.npz"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", list(cases()))
def test_simulated_kernel_equals_cpu_kernel_bit_for_bit(simulated, name):
    want = cpu_features(name)
    got = simulated[name]
    assert got.dtype == np.float32 and got.shape == want.shape
    # To float32 rounding, first (clearer message), then bit for bit.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", list(point_cases()))
def test_simulated_points_equal_cpu_points_bit_for_bit(simulated, name):
    from bigdens.descriptors import compute_points

    points, atoms, species, params = point_cases()[name]
    want = compute_points(points, atoms, species, params)
    np.testing.assert_array_equal(simulated[name], want)
    if name == "points-no-atoms":
        radial = params.radial_mask()
        assert (want[:, radial] == np.float32(params.r_cut)).all() and (want[:, ~radial] == 0).all()


def test_cases_exercise_padding_ties_and_points_on_atoms(simulated):
    _, _, _, params = halo_and_block("padding")
    pad = simulated["padding"].reshape(-1, params.n_features)
    radial = pad[:, : params.m[0]]
    assert (radial == np.float32(params.r_cut)).any(axis=1).mean() > 0.5  # fewer than M within r_cut
    n_within = (radial < np.float32(params.r_cut)).sum(axis=1)
    assert (n_within < params.k[0]).any() and (n_within >= params.k[0]).any()  # some have fewer than K
    _, grid, block, params = halo_and_block("perfect")
    perfect = simulated["perfect"].reshape(-1, params.n_features)
    assert (perfect[:, 0] == 0).any()  # grid points on atoms: d1 = 0
    assert np.isfinite(perfect).all()
    # Exact ties: some point has several atoms at exactly the same nearest distance.
    assert (perfect[:, 0] == perfect[:, 1]).any() and (perfect[:, 0] > 0).any()
    _, _, _, params = halo_and_block("triclinic")
    assert params.cross_sizes == (0,) and simulated["triclinic"].shape[-1] == params.n_features


def test_import_does_not_load_numba_cuda():
    code = ("import sys, bigdens, bigdens._descriptor_cuda; "
            "assert 'numba.cuda' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_without_gpu_or_simulator_it_refuses_with_a_setup_error():
    from numba import config, cuda

    from bigdens._descriptor_cuda import compute_block_cuda
    from bigdens.errors import SetupError

    if config.ENABLE_CUDASIM or cuda.is_available():
        pytest.skip("numba sees a CUDA GPU or its simulator")
    with pytest.raises(SetupError, match="needs a CUDA GPU that numba sees"):
        compute_block_cuda(*halo_and_block("al-rattled"))


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["sige-cross", "triclinic", "perfect"])
def test_gpu_kernel_equals_cpu_kernel_and_stays_on_the_gpu(name):
    import torch

    from bigdens._descriptor_cuda import compute_block_cuda

    halo, grid, block, params = halo_and_block(name)
    want = cpu_features(name)
    dev = compute_block_cuda(halo, grid, block, params)
    assert hasattr(dev, "__cuda_array_interface__") and dev.shape == want.shape
    t = torch.as_tensor(dev, device="cuda")
    assert t.data_ptr() == dev.__cuda_array_interface__["data"][0]  # wrapped, not copied
    np.testing.assert_allclose(t.cpu().numpy(), want, rtol=1e-6, atol=1e-6)
    # Into a torch tensor given as out.
    buf = torch.full((block.n_points, params.n_features), float("nan"), device="cuda")
    compute_block_cuda(halo, grid, block, params, out=buf)
    np.testing.assert_allclose(buf.cpu().numpy().reshape(want.shape), want, rtol=1e-6, atol=1e-6)


if __name__ == "__main__":
    # The subprocess of the `simulated` fixture: NUMBA_ENABLE_CUDASIM=1 is set before numba's import.
    sys.path.insert(0, str(REPO))
    from bigdens._descriptor_cuda import compute_block_cuda, compute_points_cuda, simulated as _simulated

    assert _simulated(), "run with NUMBA_ENABLE_CUDASIM=1"
    feats = {name: compute_block_cuda(*halo_and_block(name)) for name in cases()}
    feats.update({name: compute_points_cuda(*args) for name, args in point_cases().items()})
    np.savez(sys.argv[1], **feats)
