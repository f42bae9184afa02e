"""``bigdens plot``: a lattice plane of the density, its total σ and its epistemic σ, side by side."""

from __future__ import annotations

import argparse
import sys

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
    import matplotlib.pyplot as plt
    import zarr

    from .. import store
    from ..celllist import plane_normals_norm
    from ..errors import SetupError

    axis, frac = parse_plane(args.plane)
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(args.output).suffix.lstrip(".").lower()
    if suffix and suffix not in kinds:
        raise SetupError(f"cannot write the image {args.output!r}: unknown format {suffix!r}; "
                         f"use one of {', '.join(sorted(kinds))}, e.g. -o plane.png")
    if not Path(args.output).absolute().parent.is_dir():
        raise SetupError(f"cannot write {args.output!r}: its folder does not exist; create it first")
    if Path(args.output).is_dir():
        raise SetupError(f"cannot write {args.output!r}: it is a folder; give a file name, e.g. -o plane.png")
    attrs = store.read_attrs(args.store)
    if attrs is None:
        raise SetupError(f"{args.store!r} is not a bigdens store")
    # Metadata, coordinates and atoms first; then the checksum of every written block the plane cuts.
    reader = store.open_checked(args.store, attrs=attrs, blocks=False, frame=args.frame)
    if not attrs.get("complete"):
        # Still useful while a run goes on, but blank regions must not pass for zero density.
        print(f"warning: {args.store!r} is incomplete: regions not written yet read NaN and show blank; "
              "finish it with `bigdens predict ... --resume`", file=sys.stderr)
    root = zarr.open_group(args.store, mode="r", use_consolidated=False)
    cell = np.asarray(attrs["cell"], dtype=np.float64)
    shape = tuple(attrs["grid_shape"])
    index = int(round(frac * shape[axis])) % shape[axis]
    planes = reader.plane(("density", "density_std", "density_std_epistemic"), axis, index)
    rho, std, epi = (planes[name].astype(np.float64) for name in ("density", "density_std", "density_std_epistemic"))
    threshold = attrs.get("epistemic_threshold")  # None for models without an epistemic reference
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
    positions = np.asarray(root["positions"][() if reader.frame is None else reader.frame], dtype=np.float64)
    numbers = np.asarray(root["numbers"][:])
    fpos = np.linalg.solve(cell.T, positions.T).T
    fpos -= np.floor(fpos)
    plane_f = index / shape[axis]
    df = (fpos[:, axis] - plane_f + 0.5) % 1.0 - 0.5
    near = np.abs(df) / plane_normals_norm(cell)[axis] <= args.atom_distance
    inplane = fpos[near][:, a, None] * cell[a] + fpos[near][:, b, None] * cell[b]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    panels = ((axes[0], rho, "density", "viridis"), (axes[1], std, "total σ", "magma"),
              (axes[2], epi, "epistemic σ", "magma"))
    for ax, data, title, cmap in panels:
        mesh = ax.pcolormesh(X, Y, data, cmap=cmap, shading="flat")
        fig.colorbar(mesh, ax=ax, label=f"{title} (e/Å³)")
        if near.any():
            ax.scatter(inplane @ u, inplane @ v, s=18, facecolors="none", edgecolors="white", linewidths=0.8,
                       label=f"atoms within {args.atom_distance:g} Å")
        ax.set_aspect("equal")
        ax.set_xlabel("Å (along a%d)" % (a + 1))
        ax.set_ylabel("Å")
        ax.set_title(f"{title}, plane {'xyz'[axis]}={plane_f:.3f} (grid index {index})")
    n_high = 0
    if threshold is not None:
        high = epi > np.float32(threshold)  # as the run counted them (float32 store values)
        n_high = int(high.sum())
        if n_high:
            centres = (np.arange(shape[a])[:, None, None] / shape[a]) * cell[a] + \
                (np.arange(shape[b])[None, :, None] / shape[b]) * cell[b]
            axes[2].contour(centres @ u, centres @ v, high.astype(float), levels=[0.5], colors="cyan",
                            linewidths=1.0)
        axes[2].set_title(f"epistemic σ; cyan: above {threshold:.2g} (validation 99.9 %)", fontsize=9)
    if near.any():
        axes[0].legend(loc="upper right", fontsize=7)
    from .._files import write_figure

    try:  # never a half-written image, no temporary left behind
        write_figure(args.output, fig, format=suffix or matplotlib.rcParams["savefig.format"])
    except OSError as exc:
        raise SetupError(f"cannot write {args.output!r} ({exc.strerror or exc}); choose a writable destination") \
            from None
    flagged = "" if threshold is None else f", {n_high} points above the epistemic threshold"
    which = "" if reader.frame is None else f"frame {reader.frame}, "
    print(f"wrote {args.output}: {which}plane {'xyz'[axis]}={plane_f:.3f}, {int(near.sum())} atoms marked "
          f"(species {sorted(set(numbers[near].tolist()))}){flagged}")
    return 0
