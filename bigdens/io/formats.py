"""The registry of density file formats: each format declared once, in :data:`FORMATS`.

Modelled on ASE's ``ase/io/formats.py``: one module per format,
``bigdens.io.<module>``, holding ``read_<name>`` and/or ``write_<name>``
(found by that convention and imported only when the format is used).  The
file-name patterns, the reader and writer dispatch (:func:`guess_format`,
:func:`read_density_file`, :func:`write_density_file`), the choices of
``bigdens export --format`` and every error message that lists formats are
derived from the registry; adding a format is one :class:`DensityFormat` line
plus its module.

Units: every reader returns a :class:`bigdens.io.DensityFile` in Å and e/Å³,
and every writer takes the structure in Å and the field in e/Å³, shape
(n1, n2, n3), on the grid of DESIGN §1 (point (0, 0, 0) on the cell origin);
the conversion to the file's units (:attr:`DensityFormat.units`) happens in
the format's module only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from . import DensityFile


@dataclass(frozen=True)
class DensityFormat:
    """One density file format.

    Attributes
    ----------
    name : str
        Short name (``"cube"``): the value of ``format=`` and of ``bigdens
        export --format``, and the ``<name>`` of ``read_<name>`` /
        ``write_<name>``.
    label : str
        What users call it (``"Gaussian cube"``), for messages.
    description : str
        One line: what the files are and who writes them.
    suffixes : tuple of str
        File-name endings that mean this format (matched case-insensitively,
        before any name pattern: ``chgcar.cube`` is a cube file).
    names : tuple of str
        ``fnmatch`` patterns on the whole file name (case-insensitive), tried
        after every format's suffixes, e.g. ``"*CHGCAR*"``.
    units : str
        Units in the file (lengths; values), for messages and the export line.
    read : bool
        Whether ``bigdens.io.<module>.read_<name>`` exists.
    write : bool
        Whether ``bigdens.io.<module>.write_<name>`` exists.
    write_axis : int or None
        Of a writer: the grid axis along which it asks for its input, in
        order: ``0`` for slabs ``data[i]`` of shape (n2, n3), ``2`` for planes
        ``data[:, :, k]`` of shape (n1, n2) (see
        :class:`bigdens.store.CheckedSlabs`).
    write_note : str
        Of a writer: what a user should know about the file it writes (shown
        by ``bigdens export``), or "".
    write_options : tuple of str
        Of a writer: the keyword options it takes besides ``comment`` (``bigdens export`` passes its
        ``--ecutrho``, ``--alat`` and ``--electrons`` as ``ecutrho``, ``alat``, ``n_electrons`` to the
        writers that name them, and refuses them for the others).
    made_by : str
        Of a format bigdens reads but does not export: the command that makes
        one from a store instead (named in the refusal), or "".
    module : str
        Module under :mod:`bigdens.io` (defaults to ``name``).
    """

    name: str
    label: str
    description: str
    suffixes: tuple[str, ...]
    names: tuple[str, ...] = ()
    units: str = ""
    read: bool = True
    write: bool = False
    write_axis: int | None = None
    write_note: str = ""
    write_options: tuple[str, ...] = ()
    made_by: str = ""
    module: str = ""

    @property
    def patterns(self) -> tuple[str, ...]:
        """The file-name patterns of this format, as shown to users: ``("*.cube", ...)``."""
        return self.names + tuple(f"*{s}" for s in self.suffixes)

    @property
    def units_ascii(self) -> str:
        """:attr:`units` in ASCII, for file comments: ``"Bohr, e/Bohr^3"``."""
        units = self.units
        for a, b in (("³", "^3"), ("Å", "A"), ("ρ", "rho"), ("·", "*")):
            units = units.replace(a, b)
        return units

    @property
    def example_name(self) -> str:
        """A file name of this format, for messages: ``"density.cube"``, ``"CHGCAR"``."""
        return self.names[0].strip("*") if self.names else f"density{self.suffixes[0]}"

    def suffix_of(self, filename: str) -> str | None:
        """The suffix of :attr:`suffixes` that ``filename`` (a bare name) ends with, or None."""
        low = filename.lower()
        return next((s for s in self.suffixes if low.endswith(s.lower())), None)

    def matches_name(self, filename: str) -> bool:
        """Whether ``filename`` (a bare name) matches one of :attr:`names`."""
        low = filename.lower()
        return any(fnmatchcase(low, p.lower()) for p in self.names)

    def _function(self, kind: str) -> Callable[..., Any]:
        mod = importlib.import_module(f"{__package__}.{self.module or self.name}")
        return getattr(mod, f"{kind}_{self.name}")

    @property
    def reader(self) -> Callable[..., "DensityFile"]:
        """``read_<name>(path, **kwargs) -> DensityFile`` (Å, e/Å³); imports the module."""
        return get_format(self.name, mode="r")._function("read")

    @property
    def writer(self) -> Callable[..., None]:
        """``write_<name>(path, atoms, data_e_per_A3, *, comment=..., **kwargs)``; imports the module."""
        return get_format(self.name, mode="w")._function("write")


#: Every density file format, in the order messages list them.
FORMATS: tuple[DensityFormat, ...] = (
    DensityFormat("cube", "Gaussian cube", "Gaussian cube file (GPAW, ASE, QE pp.x output_format=6, VESTA)",
                  suffixes=(".cube", ".cub", ".cube.gz"), units="Bohr, e/Bohr³", write=True, write_axis=0),
    DensityFormat("chgcar", "VASP CHGCAR", "VASP CHGCAR/CHG/PARCHG/AECCAR* file (VASP restarts from it, ICHARG=1)",
                  suffixes=(".vasp",), names=("*CHGCAR*", "*PARCHG*", "*AECCAR*", "CHG"),
                  units="Å, ρ·V_cell in electrons", write=True, write_axis=2,
                  write_note="atoms grouped by element, as VASP needs"),
    DensityFormat("gpw", "GPAW restart", "GPAW restart file, its smooth valence pseudo-density (needs GPAW)",
                  suffixes=(".gpw",), units="Å, e/Å³", made_by="bigdens dft STORE -o FILE.gpw"),
    DensityFormat("xsf", "XSF", "XCrySDen XSF 3-D data grid (Quantum ESPRESSO pp.x output_format=5, VESTA)",
                  suffixes=(".xsf", ".xsf.gz"), units="Å, e/Bohr³", write=True, write_axis=2),
    DensityFormat("qe", "Quantum ESPRESSO charge density",
                  "pw.x's OUTDIR/PREFIX.save/charge-density.dat (its starting density with startingpot='file')",
                  suffixes=(), names=("charge-density.dat",), units="Bohr, rho(G) of e/Bohr³", read=False,
                  write=True, write_axis=0, write_options=("ecutrho", "alat", "n_electrons"),
                  write_note="the G-vectors of the pw.x run with this cell and --ecutrho, in its order"),
)

_BY_NAME = {f.name: f for f in FORMATS}


def readable() -> tuple[DensityFormat, ...]:
    """The formats bigdens reads, in registry order."""
    return tuple(f for f in FORMATS if f.read)


def writable() -> tuple[DensityFormat, ...]:
    """The formats bigdens writes, in registry order."""
    return tuple(f for f in FORMATS if f.write)


def _join(items: list[str], word: str = "or") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def pattern_list(formats=None, *, compressed: bool = True) -> str:
    """``"Gaussian cube (*.cube, ...), ... or XSF (*.xsf, ...)"``: formats and their file names, for one line.

    ``compressed=False`` leaves out the ``.gz`` patterns (writers write uncompressed files).
    """
    formats = FORMATS if formats is None else formats
    return _join([f"{f.label} ({', '.join(p for p in f.patterns if compressed or not p.lower().endswith('.gz'))})"
                  for f in formats])


def units_list(formats=None) -> str:
    """``"Gaussian cube (Bohr, e/Bohr³), ... or XSF (Å, e/Bohr³)"``: formats and the units in their files."""
    formats = FORMATS if formats is None else formats
    return _join([f"{f.label} ({f.units})" for f in formats])


def get_format(name: str, *, mode: str = "r") -> DensityFormat:
    """The registered format ``name`` (``mode`` ``"r"`` or ``"w"``: one bigdens reads or writes).

    Raises
    ------
    InputError
        For an unknown name, or one that cannot be read (``"r"``) or written
        (``"w"``), naming the choices.
    """
    if mode not in ("r", "w"):
        raise ValueError(f"mode must be 'r' or 'w', got {mode!r}")
    fmts = readable() if mode == "r" else writable()
    fmt = _BY_NAME.get(str(name).lower()) if isinstance(name, str) else None
    verb = "read" if mode == "r" else "write"
    if fmt is None:
        raise InputError(f"unknown density file format {name!r}; use {_join([repr(f.name) for f in fmts])}")
    if fmt not in fmts:
        raise InputError(f"bigdens cannot {verb} {fmt.label} files; use {_join([repr(f.name) for f in fmts])}")
    return fmt


def match_format(path: str | Path, formats=None) -> DensityFormat | None:
    """The format of ``formats`` (default: all) that ``path``'s file name means, or None.

    Suffixes are tried first over every format, then name patterns, so
    ``CHGCAR.cube`` is a cube file and ``CHGCAR`` a VASP one.
    """
    formats = FORMATS if formats is None else formats
    name = Path(path).name
    for f in formats:
        if f.suffix_of(name):
            return f
    return next((f for f in formats if f.matches_name(name)), None)


def guess_format(path: str | Path) -> str:
    """The name of the format a density file's name means (``"cube"``, ``"chgcar"``, ``"gpw"``, ``"xsf"``).

    Raises
    ------
    InputError
        If the name matches no registered format, listing their file names.
    """
    fmt = match_format(path)
    if fmt is None:
        raise InputError(f"cannot tell the format of {str(path)!r} from its name; density files must be "
                         f"{pattern_list(readable())}; or pass a bigdens data-set directory")
    return fmt.name


def output_format(path: str | Path, format: str | None = None, *, option: str = "format=") -> DensityFormat:
    """The format to write ``path`` in: ``format`` if given, else the one its file name means.

    ``option`` is how the caller's users choose a format, for the message
    (``"--format"`` at the command line).

    Raises
    ------
    InputError
        For an unknown or read-only ``format``; a name that means no format
        bigdens writes; a compressed (``.gz``) output name.
    """
    if format is not None:
        fmt = get_format(format, mode="w")
    else:
        fmt = match_format(path)
        if fmt is None or not fmt.write:
            why = (f"cannot tell which format to write {str(path)!r} in from its name" if fmt is None else
                   f"{str(path)!r} names a {fmt.label} file, which export does not write"
                   + (f" (`{fmt.made_by}` starts a DFT run from the store and writes one)" if fmt.made_by else ""))
            raise InputError(f"{why}; name it as {pattern_list(writable(), compressed=False)}, or choose one with "
                             f"{option} {_join([f.name for f in writable()])}")
    if Path(path).name.lower().endswith(".gz"):
        raise InputError(f"cannot write the compressed file {str(path)!r}; write it uncompressed (drop '.gz') and "
                         "compress it afterwards")
    return fmt


def read_density_file(path: str | Path, *, format: str | None = None, **kwargs: Any) -> "DensityFile":
    """Read a density file of any registered format (format from the name unless given).

    Parameters
    ----------
    path
        The file.
    format
        A registered name (:data:`FORMATS`); default: from the file name (:func:`guess_format`).
    **kwargs
        Passed on to the format's reader, e.g. ``density_units="e/A^3"`` for
        :func:`bigdens.io.cube.read_cube` and :func:`bigdens.io.xsf.read_xsf`
        (whose default is e/Bohr³, the cube standard and Quantum ESPRESSO's
        ``pp.x``).

    Returns
    -------
    DensityFile
        Cell (3, 3) Å, positions (n_atoms, 3) Å, numbers (n_atoms,), density
        (n1, n2, n3) e/Å³ on the grid of DESIGN §1.

    Raises
    ------
    InputError
        A missing file, an unknown format, or a file its reader refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"density file {str(path)!r} does not exist")
    fmt = get_format(format, mode="r") if format is not None else get_format(guess_format(path), mode="r")
    return fmt.reader(path, **kwargs)


def write_density_file(path, atoms: "Atoms", data_e_per_A3, *, format: str | None = None,
                       comment: str | None = None, **options: Any) -> DensityFormat:
    """Write a periodic density in a registered format (format from the name unless given).

    Parameters
    ----------
    path
        Output path (written atomically by each writer).
    atoms
        The structure, Å; its cell defines the grid.
    data_e_per_A3
        The field, shape (n1, n2, n3), e/Å³, on the grid of DESIGN §1;
        anything with ``shape`` that gives slabs or planes along the format's
        :attr:`DensityFormat.write_axis` in order (a NumPy or zarr array, a
        :class:`bigdens.store.CheckedSlabs`).
    format
        A name of :func:`writable` formats; default: from the file name.
    comment
        One line for the file's comment (every writer takes ``comment=``).
    **options
        The format's :attr:`DensityFormat.write_options` (e.g. ``ecutrho=`` for ``"qe"``).

    Returns
    -------
    DensityFormat
        The format written (for its :attr:`~DensityFormat.units`).
    """
    fmt = output_format(path, format)
    unknown = sorted(set(options) - set(fmt.write_options))
    if unknown:
        raise InputError(f"the {fmt.label} writer takes no {', '.join(unknown)}")
    kwargs = {} if comment is None else {"comment": comment}
    fmt.writer(path, atoms, data_e_per_A3, **kwargs, **options)
    return fmt


__all__ = ["DensityFormat", "FORMATS", "get_format", "guess_format", "match_format", "output_format",
           "pattern_list", "read_density_file", "readable", "units_list", "writable", "write_density_file"]
