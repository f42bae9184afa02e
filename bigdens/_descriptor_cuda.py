"""The descriptors of :mod:`bigdens.descriptors` computed by a CUDA kernel (numba.cuda).

One GPU thread per grid point.  The atom images of the halo are sorted by
(species, bin, image index) into the cubic bins of
:func:`bigdens.descriptors.atom_bins` (edge :data:`bigdens.descriptors.BIN_EDGE`);
a thread visits, species by species, the bins within ``r_cut`` of its point
in C order of the bins, and keeps the M nearest squared distances and the K
nearest displacement vectors of each species in small per-thread (local)
arrays by insertion.  The visiting order of the atoms within ``r_cut`` of a
point is then the CPU kernel's (bin order, then image order), so exact
distance ties are broken the same way.

The arithmetic is the CPU kernel's, operation by operation, in float64: the
products and sums of squared distances and scalar products go through
libdevice's ``dmul_rn``/``dadd_rn``, which the CUDA compiler does not contract
into fused multiply-adds; square roots and divisions are IEEE-rounded (no fast
math).  The float32 features are therefore meant to be those of
:func:`bigdens.descriptors.compute_block` bit for bit.  The tests check that
in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``); on a GPU, the
``cuda``-marked test checks them to float32 rounding and
``benchmarks/gpu_descriptors.py`` counts the values that differ.

The local arrays need sizes fixed at compile time: a kernel is compiled per
(M capacity, K capacity, species count), the capacities being the largest
M and K of the parameters rounded up to a power of two, and kept for the
process.  Any parameters that :class:`~bigdens.descriptors.DescriptorParams`
accepts fit (M ≤ ``M_MAX``, K ≤ ``K_MAX``).

numba.cuda is imported only when a kernel is first needed, so importing this
module needs neither CUDA nor a GPU.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from ._descriptor_kernels import ON_ATOM, _keep_k_nearest, _unit_vectors
from .descriptors import BIN_EDGE, DescriptorParams, atom_bins, species_index
from .errors import InputError, SetupError

log = logging.getLogger(__name__)

#: GPU threads per CUDA block (one thread per grid point).
THREADS_PER_BLOCK = 128

_KERNELS: dict[tuple[int, int, int, bool], object] = {}
_LOCK = threading.Lock()
#: numba.cuda once :func:`_cuda` has imported it.  The kernel refers to it as a module global,
#: which is what numba's CUDA simulator replaces by its fake module while a kernel runs.
cuda = None


def _cuda():
    """numba.cuda, or SetupError when numba sees neither a CUDA GPU nor its simulator."""
    global cuda
    try:
        from numba import config
        from numba import cuda as numba_cuda
    except ImportError as exc:  # numba is a dependency; a broken install lands here
        raise SetupError(f"the CUDA descriptor kernel needs numba.cuda, which does not import ({exc})") from None
    cuda = numba_cuda
    if not config.ENABLE_CUDASIM and not cuda.is_available():
        raise SetupError(
            "the CUDA descriptor kernel needs a CUDA GPU that numba sees (numba.cuda.is_available() is False: "
            "no GPU, no driver, or no CUDA toolkit libraries for numba); compute descriptors on the CPU "
            "(bigdens.descriptors.compute_block), or set NUMBA_ENABLE_CUDASIM=1 before numba is imported "
            "to run the kernel in numba's CUDA simulator (slow; for tests)"
        )
    return cuda, bool(config.ENABLE_CUDASIM)


def available() -> bool:
    """Whether the kernel can run on a real GPU here (numba sees a CUDA GPU and its toolkit libraries)."""
    try:
        from numba import config
        from numba import cuda as numba_cuda
    except ImportError:  # pragma: no cover  (numba is a dependency)
        return False
    return not config.ENABLE_CUDASIM and bool(numba_cuda.is_available())


def simulated() -> bool:
    """True when numba.cuda is numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` at numba's import)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _capacity(v: int) -> int:
    """Smallest power of two ≥ max(v, 1)."""
    return 1 << max(0, int(v) - 1).bit_length()


def _arithmetic(sim: bool):
    """Float64 product and sum that are never contracted into a fused multiply-add."""
    if sim:
        # The simulator runs the kernel as Python: float64 arithmetic is IEEE, never fused.
        def mul(a, b):
            return a * b

        def add(a, b):
            return a + b

        return mul, add
    from numba.cuda import libdevice

    return libdevice.dmul_rn, libdevice.dadd_rn  # rounded products and sums


def _search_functions():
    """Device functions of the neighbour search: ``bin_range`` and ``keep_nearest``."""
    device = cuda.jit(device=True, inline=True)
    keep_k_nearest = device(_keep_k_nearest.py_func)  # the CPU kernel's insertion, compiled for the GPU

    @device
    def bin_range(px, py, pz, reach, origin, edge, dims):
        """Bins within reach of the point (the CPU kernel's tile search), clipped to the bins with
        comparisons (no builtins max/min in the kernel): lo0, lo1, lo2, hi0, hi1, hi2."""
        lo0 = int(math.floor((px - reach - origin[0]) / edge))
        lo1 = int(math.floor((py - reach - origin[1]) / edge))
        lo2 = int(math.floor((pz - reach - origin[2]) / edge))
        hi0 = int(math.floor((px + reach - origin[0]) / edge))
        hi1 = int(math.floor((py + reach - origin[1]) / edge))
        hi2 = int(math.floor((pz + reach - origin[2]) / edge))
        if lo0 < 0:
            lo0 = 0
        if lo1 < 0:
            lo1 = 0
        if lo2 < 0:
            lo2 = 0
        if hi0 > dims[0] - 1:
            hi0 = dims[0] - 1
        if hi1 > dims[1] - 1:
            hi1 = dims[1] - 1
        if hi2 > dims[2] - 1:
            hi2 = dims[2] - 1
        return lo0, lo1, lo2, hi0, hi1, hi2

    @device
    def keep_nearest(dx, dy, dz, d2, s, ms, ks, n, nkept, rd2, kd2, kvec):
        """Insert one atom at d2 (Å²) into the ms smallest d2 and the ks nearest displacements
        (ties keep the earlier atom); returns the new counts (n, nkept)."""
        if n < ms or d2 < rd2[ms - 1]:
            j = n if n < ms else ms - 1
            while j > 0 and rd2[j - 1] > d2:
                rd2[j] = rd2[j - 1]
                j -= 1
            rd2[j] = d2
        nkept = keep_k_nearest(dx, dy, dz, d2, s, ks, nkept, kd2, kvec)
        return n + 1, nkept

    return bin_range, keep_nearest


def _feature_functions(mul, add):
    """Device functions writing a point's features: ``write_species`` and ``write_cross``."""
    from numba import float32, float64

    on_atom = ON_ATOM
    device = cuda.jit(device=True, inline=True)
    unit_vectors = device(_unit_vectors.py_func)  # the CPU kernel's normalisation, compiled for the GPU

    @device
    def write_species(out, p, s, ms, ks, off, n, nkept, r_cut, rd2, kd2, kvec):
        """Species s's features of point p from its nearest atoms; leaves unit vectors in kvec[s]."""
        # Radial part, padded with r_cut; distances below ON_ATOM (as float32) count as zero.
        for i in range(ms):
            if i < n:
                v = float32(math.sqrt(rd2[i]))
                if float64(v) < on_atom:
                    v = float32(0.0)
            else:
                v = float32(r_cut)
            out[p, off + i] = v
        # Angular part: unit vectors of the nearest ks, scalar products i < j; missing ones 0.
        unit_vectors(kd2, kvec, s, nkept)
        col = off + ms
        for i in range(ks):
            for j in range(i + 1, ks):
                val = 0.0
                if j < nkept:
                    val = add(add(mul(kvec[s, i, 0], kvec[s, j, 0]), mul(kvec[s, i, 1], kvec[s, j, 1])),
                              mul(kvec[s, i, 2], kvec[s, j, 2]))
                out[p, col] = val
                col += 1

    @device
    def write_cross(out, p, k, cross, n_pairs, nk_s, kvec):
        """Cross-species blocks of point p: u_i (species sa) · u_j (species sb), i-major; missing ones 0."""
        for q in range(n_pairs):
            sa = cross[q, 0]
            sb = cross[q, 1]
            col = cross[q, 2]
            kb = k[sb]
            for i in range(k[sa]):
                for j in range(kb):
                    val = 0.0
                    if i < nk_s[sa] and j < nk_s[sb]:
                        val = add(add(mul(kvec[sa, i, 0], kvec[sb, j, 0]), mul(kvec[sa, i, 1], kvec[sb, j, 1])),
                                  mul(kvec[sa, i, 2], kvec[sb, j, 2]))
                    out[p, col + i * kb + j] = val

    return write_species, write_cross


def _kernel(m_cap: int, k_cap: int, s_cap: int):
    """The kernel with local arrays of M capacity ``m_cap``, K capacity ``k_cap``, ``s_cap`` species."""
    _, sim = _cuda()  # binds the module global ``cuda`` that the kernel uses
    key = (m_cap, k_cap, s_cap, sim)
    with _LOCK:
        if key in _KERNELS:
            return _KERNELS[key]
        from numba import float64, int64

        mul, add = _arithmetic(sim)
        bin_range, keep_nearest = _search_functions()
        write_species, write_cross = _feature_functions(mul, add)

        @cuda.jit
        def kernel(points, atom_pos, starts, n_bins, origin, edge, dims, m, k, offsets, r_cut, rc2, reach,
                   cross, n_pairs, out):
            """Descriptor row of each point; arguments as :func:`launch_args` returns them, then ``out``."""
            p = cuda.grid(1)
            if p >= points.shape[0]:
                return
            rd2 = cuda.local.array(m_cap, float64)  # the M smallest squared distances, ascending
            kd2 = cuda.local.array(k_cap, float64)  # the K smallest, ascending
            kvec = cuda.local.array((s_cap, k_cap, 3), float64)  # their displacements, then unit vectors
            nk_s = cuda.local.array(s_cap, int64)
            px = points[p, 0]
            py = points[p, 1]
            pz = points[p, 2]
            lo0, lo1, lo2, hi0, hi1, hi2 = bin_range(px, py, pz, reach, origin, edge, dims)
            near = lo0 <= hi0 and lo1 <= hi1 and lo2 <= hi2
            for s in range(m.shape[0]):
                n = 0
                nkept = 0
                if near:
                    base = s * n_bins
                    for bx in range(lo0, hi0 + 1):
                        for by in range(lo1, hi1 + 1):
                            b = base + (bx * dims[1] + by) * dims[2]
                            # Bins (bx, by, lo2..hi2) of species s are one run of atoms.
                            for a in range(starts[b + lo2], starts[b + hi2 + 1]):
                                dx = atom_pos[a, 0] - px
                                dy = atom_pos[a, 1] - py
                                dz = atom_pos[a, 2] - pz
                                d2 = add(add(mul(dx, dx), mul(dy, dy)), mul(dz, dz))
                                if d2 <= rc2:
                                    n, nkept = keep_nearest(dx, dy, dz, d2, s, m[s], k[s], n, nkept, rd2, kd2, kvec)
                write_species(out, p, s, m[s], k[s], offsets[s], n, nkept, r_cut, rd2, kd2, kvec)
                nk_s[s] = nkept
            write_cross(out, p, k, cross, n_pairs, nk_s, kvec)

        log.debug("CUDA descriptor kernel for M ≤ %d, K ≤ %d, %d species%s", m_cap, k_cap, s_cap,
                  " (simulator)" if sim else "")
        _KERNELS[key] = kernel
        return kernel


def _species_bins(atom_positions: np.ndarray, atom_species: np.ndarray, n_species: int):
    """Atom images sorted by (species, bin, image index), and the start of each (species, bin) run.

    The bins are those of :func:`bigdens.descriptors.atom_bins` with edge
    :data:`~bigdens.descriptors.BIN_EDGE`.

    Returns
    -------
    positions : ndarray, shape (max(n, 1), 3), float64, Å
        Sorted images (one row of zeros when there are none; never read).
    starts : ndarray, shape (n_species · n_bins + 1,), int64
        Species s, bin b holds ``positions[starts[s·n_bins + b]:starts[s·n_bins + b + 1]]``.
    n_bins : int
    origin : ndarray, shape (3,), float64, Å
    dims : ndarray, shape (3,), int64
    """
    by_bin, bin_starts, origin, dims = atom_bins(atom_positions, BIN_EDGE)
    n_bins = int(np.prod(dims))
    counts = np.diff(bin_starts)
    flat = np.repeat(np.arange(len(counts), dtype=np.int64), counts)  # bin of each image, in by_bin order
    key = atom_species[by_bin] * n_bins + flat
    order = by_bin[np.argsort(key, kind="stable")]  # stable: image order within a (species, bin) run
    starts = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=n_species * n_bins))]).astype(np.int64)
    positions = atom_positions[order] if len(order) else np.zeros((1, 3))
    return np.ascontiguousarray(positions, dtype=np.float64), starts, n_bins, origin, dims


def launch_args(points: np.ndarray, atom_positions: np.ndarray, atom_species: np.ndarray,
                params: DescriptorParams) -> tuple:
    """The kernel for ``params`` and its arguments but the last (``out``), copied to the GPU.

    Launch as ``kernel[ceil(n_points / T), T](*args, out)`` with ``out`` a
    float32 CUDA array of shape (n_points, n_features) (what
    :func:`compute_points_cuda` does with T = :data:`THREADS_PER_BLOCK`);
    for timing the kernel alone.  Arguments as in :func:`compute_points_cuda`.

    Returns
    -------
    kernel : numba.cuda dispatcher
    args : tuple
        points (n_points, 3) float64 Å; the sorted atom images (n, 3) float64 Å;
        the (species, bin) run starts (S·n_bins + 1,) int64; n_bins; the bin
        origin (3,) float64 Å; the bin edge, Å; bins per axis (3,) int64; M, K
        and the first column per species (S,) int64; r_cut, r_cut², and the
        bin search reach r_cut + 1e-9 (Å, Å², Å); the cross-block rows
        (s, t, first column) (max(n_pairs, 1), 3) int64 and n_pairs.
    """
    cuda, _ = _cuda()
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    atom_positions = np.ascontiguousarray(atom_positions, dtype=np.float64).reshape(-1, 3)
    atom_species = np.ascontiguousarray(atom_species, dtype=np.int64)
    n_species = len(params.species)
    positions, starts, n_bins, origin, dims = _species_bins(atom_positions, atom_species, n_species)
    cross = np.array([(s, t, off) for (s, t), off in zip(params.cross_pairs, params.cross_offsets)],
                     dtype=np.int64).reshape(-1, 3)
    n_pairs = len(cross)
    if n_pairs == 0:
        cross = np.zeros((1, 3), dtype=np.int64)  # never read
    kernel = _kernel(_capacity(max(params.m)), _capacity(max(params.k)), n_species)
    r_cut = float(params.r_cut)

    def dev(a, dtype):
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    args = (dev(points, np.float64), dev(positions, np.float64), dev(starts, np.int64), n_bins,
            dev(origin, np.float64), float(BIN_EDGE), dev(dims, np.int64), dev(params.m, np.int64),
            dev(params.k, np.int64), dev(params.offsets, np.int64), r_cut, r_cut * r_cut, r_cut + 1e-9,
            dev(cross, np.int64), n_pairs)
    return kernel, args


def compute_points_cuda(points: np.ndarray, atom_positions: np.ndarray, atom_species: np.ndarray,
                        params: DescriptorParams, *, out=None):
    """Descriptors of Cartesian points on the GPU, given atom images already resolved.

    The CUDA counterpart of :func:`bigdens.descriptors.compute_points` (same
    arguments, same float32 numbers).

    Parameters
    ----------
    points : ndarray, shape (n_points, 3), Å
    atom_positions : ndarray, shape (n_images, 3), Å
        Every atom image that may lie within ``r_cut`` of a point.
    atom_species : ndarray, shape (n_images,), int64
        Species index (see :func:`bigdens.descriptors.species_index`) of each image.
    params
        Descriptor settings.
    out : CUDA array, shape (n_points, n_features), float32, optional
        Where to write the features on the GPU: a numba device array or any
        object with ``__cuda_array_interface__`` (e.g. a C-contiguous torch
        CUDA tensor).  Not with the simulator.

    Returns
    -------
    numba device array (a GPU), or ndarray (the simulator); shape (n_points, n_features), float32
        With ``out``, a numba view of it.  On a GPU the array stays there;
        ``torch.as_tensor(result, device="cuda")`` wraps it without a copy.

    Raises
    ------
    SetupError
        If numba sees neither a CUDA GPU nor its simulator.
    InputError
        If ``out`` has the wrong shape or type.
    """
    cuda, sim = _cuda()
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    atom_positions = np.ascontiguousarray(atom_positions, dtype=np.float64).reshape(-1, 3)
    atom_species = np.ascontiguousarray(atom_species, dtype=np.int64)
    n_points, n_features = len(points), params.n_features
    if out is not None:
        if sim:
            raise InputError("out= needs a real GPU; the CUDA simulator returns a new array")
        if not cuda.is_cuda_array(out):
            raise InputError(f"out must be a CUDA array (with __cuda_array_interface__), got {type(out).__name__}")
        out = cuda.as_cuda_array(out)
        if out.shape != (n_points, n_features) or out.dtype != np.float32 or not out.is_c_contiguous():
            raise InputError(f"out must be a C-contiguous float32 CUDA array of shape {(n_points, n_features)}, "
                             f"got {out.dtype} {out.shape}")
    else:
        out = cuda.device_array((n_points, n_features), dtype=np.float32)
    if n_points == 0:
        return out.copy_to_host() if sim else out
    kernel, args = launch_args(points, atom_positions, atom_species, params)
    n_blocks = (n_points + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kernel[n_blocks, THREADS_PER_BLOCK](*args, out)
    return out.copy_to_host() if sim else out


def compute_block_cuda(halo, grid, block, params: DescriptorParams, *, out=None):
    """Descriptors of the grid points of one block, from its halo, on the GPU.

    The CUDA counterpart of :func:`bigdens.descriptors.compute_block`: the
    same float32 features (bit for bit; see the module docstring).

    Parameters
    ----------
    halo : bigdens.blocks.Halo
        Atom images around the block.
    grid : bigdens.grid.Grid
    block : bigdens.blocks.Block
    params
        Descriptor settings.
    out : CUDA array, shape (block.n_points, n_features), float32, optional
        Where to write the features (e.g. a C-contiguous torch CUDA tensor);
        see :func:`compute_points_cuda`.

    Returns
    -------
    numba device array (a GPU), or ndarray (the simulator); shape (*block.shape, n_features), float32
        Descriptors in the block's C order of grid indices.  On a GPU they stay
        there: ``torch.as_tensor(result, device="cuda")`` wraps them without
        a copy (``__cuda_array_interface__``).  With ``out``, a view of it.

    Raises
    ------
    SetupError
        If numba sees neither a CUDA GPU nor its simulator.
    InputError
        If the halo holds species that ``params`` does not know.
    """
    points = grid.points(block.start, block.stop)
    feats = compute_points_cuda(points, halo.positions, species_index(halo.numbers, params), params, out=out)
    return feats.reshape(*block.shape, params.n_features)


__all__ = ["THREADS_PER_BLOCK", "compute_block_cuda", "compute_points_cuda", "launch_args", "simulated"]
