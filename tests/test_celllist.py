"""The periodic cell list against a direct enumeration of images."""

from __future__ import annotations

import itertools

import numpy as np

from bigdens.celllist import build_cell_list


def test_query_box_finds_every_image(rng):
    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.0, 0.0], [1.0, -1.5, 4.0]])
    pos = rng.uniform(-3, 9, size=(150, 3))
    cl = build_cell_list(cell, pos, atoms_per_bin=3)
    lo, hi = np.array([-0.7, 0.2, -1.3]), np.array([0.4, 2.1, 0.1])
    idx, sh = cl.query_box(lo, hi)
    got = sorted(zip(idx.tolist(), map(tuple, sh.tolist())))
    frac = cl.frac
    want = []
    for s in itertools.product(range(-3, 4), repeat=3):
        f = frac + np.array(s)
        inside = np.all((f >= lo) & (f <= hi), axis=1)
        want += [(int(i), tuple(s)) for i in np.flatnonzero(inside)]
    assert got == sorted(want)
    assert len(set(i for i, _ in got)) < len(got)  # the box is wider than the cell: repeated atoms


def test_chunked_fractional_and_binning_equal_whole_array(rng, monkeypatch):
    import bigdens.celllist as celllist

    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.0, 0.0], [1.0, -1.5, 4.0]])
    pos = rng.uniform(-9, 15, size=(1000, 3))
    pos[:3] = 0.0  # atoms exactly on the cell origin wrap to 0, never to 1
    whole = np.linalg.solve(cell.T, pos.T).T
    whole -= np.floor(whole)
    whole[whole >= 1.0] = 0.0
    ref = build_cell_list(cell, pos, atoms_per_bin=3)
    monkeypatch.setattr(celllist, "ROWS", 37)  # many passes, a partial last one
    out = np.full_like(pos, np.nan)
    got = celllist.fractional(cell, pos, out=out)
    assert got is out and (got >= 0).all() and (got < 1).all()
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-14)
    cl = celllist.cell_list_from_fractional(cell, got, atoms_per_bin=3)
    assert cl.frac is got  # kept, not copied
    # Same bins, so the same order: every bin's atoms sorted stably by index.
    np.testing.assert_array_equal(cl.starts, ref.starts)
    np.testing.assert_array_equal(cl.order, ref.order)
