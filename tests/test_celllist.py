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
