"""``bigdens plot``: a lattice plane of the density, its total σ and its epistemic σ, side by side."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from ._common import add_frame_argument, add_output_argument

HELP = ("plot the density, its total σ and its epistemic σ (points unlike the model's validation data outlined) on a lattice plane (e.g. --plane z=0.5) to an image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    parser.add_argument("--plane", default="z=0.5",
                        help="AXIS=F: the plane at fractional coordinate F along lattice vector a1 (x), a2 (y) "
                             "or a3 (z) (default z=0.5)")
    add_output_argument(parser, metavar="FIG.png", help="image file (png, pdf, svg)")
    parser.add_argument("--atom-distance", type=float, default=1.0, metavar="D",
                        help="mark atoms within D Å of the plane (default 1.0)")
    add_frame_argument(parser)


def parse_plane(text: str) -> tuple[int, float]:
    """``"z=0.5"`` -> (2, 0.5): the lattice axis and a fractional position in [0, 1]."""
    from ..errors import SetupError

    axis, _, value = text.partition("=")
    axis = axis.strip().lower()
    try:
        frac = float(value)
    except ValueError:
        frac = float("nan")
    if axis not in ("x", "y", "z") or not 0.0 <= frac <= 1.0:
        raise SetupError(f"--plane must look like z=0.5 (axis x, y or z; a fraction in [0, 1]), got {text!r}")
    return "xyz".index(axis), frac


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    axis, frac = parse_plane(args.plane)
    suffix = _checked_output(args.output)
    plane = _read_plane(args.store, axis, frac, args.frame)
    geo = _slice(plane, args.atom_distance)
    fig, n_high = _draw(plane, geo, args.atom_distance)
    _save(args.output, fig, suffix or matplotlib.rcParams["savefig.format"])
    flagged = "" if plane.threshold is None else f", {n_high} points above the epistemic threshold"
    which = "" if plane.frame is None else f"frame {plane.frame}, "
    near = geo.near
    print(f"wrote {args.output}: {which}plane {'xyz'[axis]}={plane.frac:.3f}, {int(near.sum())} atoms marked "
          f"(species {sorted(set(plane.numbers[near].tolist()))}){flagged}")
    return 0


@dataclass
class _Plane:
    """One lattice plane of a store, as read."""

    cell: np.ndarray  # (3, 3), Å
    shape: tuple  # the grid shape (n1, n2, n3)
    axis: int  # the lattice axis across the plane: 0, 1 or 2 (x, y, z)
    index: int  # the plane's grid index along axis
    frame: int | None  # the store's frame, None for a store of one structure
    rho: np.ndarray  # density, (n_a, n_b) float64 e/Å³ (a, b: the other two axes in order)
    std: np.ndarray  # total σ, (n_a, n_b) float64 e/Å³
    epi: np.ndarray  # epistemic σ, (n_a, n_b) float64 e/Å³
    threshold: float | None  # the store's epistemic threshold, e/Å³; None for models without a reference
    positions: np.ndarray  # (n_atoms, 3), Å
    numbers: np.ndarray  # (n_atoms,) atomic numbers

    @property
    def frac(self) -> float:
        """The plane's fractional coordinate along its axis (on the grid)."""
        return self.index / self.shape[self.axis]


@dataclass
class _Slice:
    """Where the plane's pixels and the atoms near it lie, in in-plane Cartesian coordinates (Å)."""

    a: int  # the first in-plane lattice axis
    b: int  # the second
    u: np.ndarray  # (3,) unit vector along cell[a]
    v: np.ndarray  # (3,) unit vector in the plane, orthogonal to u
    X: np.ndarray  # (n_a + 1, n_b + 1) pixel corners along u, Å
    Y: np.ndarray  # (n_a + 1, n_b + 1) pixel corners along v, Å
    near: np.ndarray  # (n_atoms,) bool: atoms within the marking distance of the plane
    inplane: np.ndarray  # (n_near, 3) those atoms projected onto the plane, Å


def _checked_output(output: str) -> str:
    """The image format the file name's suffix names ("" for none); SetupError if it cannot be written."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from ..errors import SetupError

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(output).suffix.lstrip(".").lower()
    if suffix and suffix not in kinds:
        raise SetupError(f"cannot write the image {output!r}: unknown format {suffix!r}; "
                         f"use one of {', '.join(sorted(kinds))}, e.g. -o plane.png")
    if not Path(output).absolute().parent.is_dir():
        raise SetupError(f"cannot write {output!r}: its folder does not exist; create it first")
    if Path(output).is_dir():
        raise SetupError(f"cannot write {output!r}: it is a folder; give a file name, e.g. -o plane.png")
    return suffix


def _read_plane(path: str, axis: int, frac: float, frame: int | None) -> _Plane:
    """The grid plane nearest ``frac`` along ``axis`` of the store at ``path`` (checked), with its atoms."""
    import zarr

    from .. import store

    attrs = store.require_attrs(path)
    # Metadata, coordinates and atoms first; then the checksum of every written block the plane cuts.
    reader = store.open_checked(path, attrs=attrs, blocks=False, frame=frame)
    if not attrs.get("complete"):
        # Still useful while a run goes on, but blank regions must not pass for zero density.
        print(f"warning: {path!r} is incomplete: regions not written yet read NaN and show blank; "
              "finish it with `bigdens predict ... --resume`", file=sys.stderr)
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    cell = np.asarray(attrs["cell"], dtype=np.float64)
    shape = tuple(attrs["grid_shape"])
    index = int(round(frac * shape[axis])) % shape[axis]
    planes = reader.plane(("density", "density_std", "density_std_epistemic"), axis, index)
    rho, std, epi = (planes[name].astype(np.float64) for name in ("density", "density_std", "density_std_epistemic"))
    threshold = attrs.get("epistemic_threshold")  # None for models without an epistemic reference
    positions = np.asarray(root["positions"][() if reader.frame is None else reader.frame], dtype=np.float64)
    numbers = np.asarray(root["numbers"][:])
    return _Plane(cell=cell, shape=shape, axis=axis, index=index, frame=reader.frame, rho=rho, std=std, epi=epi,
                  threshold=threshold, positions=positions, numbers=numbers)


def _slice(p: _Plane, atom_distance: float) -> _Slice:
    """The plane's pixel corners and the atoms within ``atom_distance`` (Å) of it, in the plane (Å)."""
    from ..celllist import plane_normals_norm

    cell, shape, axis = p.cell, p.shape, p.axis
    # In-plane Cartesian coordinates: u along the first in-plane lattice vector, v orthogonal to it.
    a, b = [d for d in range(3) if d != axis]
    u = cell[a] / np.linalg.norm(cell[a])
    v = cell[b] - (cell[b] @ u) * u
    v /= np.linalg.norm(v)
    # Pixel edges half-way between grid points, so each point sits at its pixel's centre.
    fa = (np.arange(shape[a] + 1) - 0.5) / shape[a]
    fb = (np.arange(shape[b] + 1) - 0.5) / shape[b]
    corners = fa[:, None, None] * cell[a] + fb[None, :, None] * cell[b]
    X, Y = corners @ u, corners @ v
    fpos = np.linalg.solve(cell.T, p.positions.T).T
    fpos -= np.floor(fpos)
    df = (fpos[:, axis] - p.frac + 0.5) % 1.0 - 0.5
    near = np.abs(df) / plane_normals_norm(cell)[axis] <= atom_distance
    inplane = fpos[near][:, a, None] * cell[a] + fpos[near][:, b, None] * cell[b]
    return _Slice(a=a, b=b, u=u, v=v, X=X, Y=Y, near=near, inplane=inplane)


def _draw(p: _Plane, s: _Slice, atom_distance: float):
    """The figure (density, total σ, epistemic σ side by side) and the number of points above the threshold."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    panels = ((axes[0], p.rho, "density", "viridis"), (axes[1], p.std, "total σ", "magma"),
              (axes[2], p.epi, "epistemic σ", "magma"))
    for ax, data, title, cmap in panels:
        mesh = ax.pcolormesh(s.X, s.Y, data, cmap=cmap, shading="flat")
        fig.colorbar(mesh, ax=ax, label=f"{title} (e/Å³)")
        if s.near.any():
            ax.scatter(s.inplane @ s.u, s.inplane @ s.v, s=18, facecolors="none", edgecolors="white",
                       linewidths=0.8, label=f"atoms within {atom_distance:g} Å")
        ax.set_aspect("equal")
        ax.set_xlabel("Å (along a%d)" % (s.a + 1))
        ax.set_ylabel("Å")
        ax.set_title(f"{title}, plane {'xyz'[p.axis]}={p.frac:.3f} (grid index {p.index})")
    n_high = 0
    if p.threshold is not None:
        high = p.epi > np.float32(p.threshold)  # as the run counted them (float32 store values)
        n_high = int(high.sum())
        if n_high:
            cell, shape, a, b = p.cell, p.shape, s.a, s.b
            centres = (np.arange(shape[a])[:, None, None] / shape[a]) * cell[a] + \
                (np.arange(shape[b])[None, :, None] / shape[b]) * cell[b]
            axes[2].contour(centres @ s.u, centres @ s.v, high.astype(float), levels=[0.5], colors="cyan",
                            linewidths=1.0)
        axes[2].set_title(f"epistemic σ; cyan: above {p.threshold:.2g} (validation 99.9 %)", fontsize=9)
    if s.near.any():
        axes[0].legend(loc="upper right", fontsize=7)
    return fig, n_high


def _save(output: str, fig, format: str) -> None:
    """Write the figure to ``output`` atomically, or SetupError (one line)."""
    from .._files import write_figure
    from ..errors import SetupError

    try:  # never a half-written image, no temporary left behind
        write_figure(output, fig, format=format)
    except OSError as exc:
        raise SetupError(f"cannot write {output!r} ({exc.strerror or exc}); choose a writable destination") \
            from None
