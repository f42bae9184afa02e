"""What a DFT single point costs: a power law fitted to the core-seconds the data sets record.

Every snapshot that ``bigdens datagen`` computes records its DFT core-seconds (manifest entry
``dft_core_seconds``).  The model fitted here is

    log t = a_c + b · log N_e + g · log N_k,

t in core-seconds, N_e the valence electrons (HGH), N_k the Monkhorst–Pack k-points the protocol
gives the cell, a_c one constant per chemical system (e.g. ``Al``, ``Ge-Si``) and b, g shared.
A plane-wave code scales as N_e² to N_e³ over these sizes and linearly in k-points; the fit
says what this machine and protocol did.  With one size only, b is fixed at 3 and g at 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

#: Exponents used when the records cannot determine them (one size, one k-mesh).
DEFAULT_EXPONENTS = (3.0, 1.0)
#: The DFT timings shipped with bigdens: every record of this project's data sets, per protocol (made by
#: :func:`write_records`; ``python -m benchmarks.cost_records`` rewrites it).  The cost model's default, so that
#: ``suggest`` and ``learn`` work from any folder; ``--cost-data`` fits your own machine's timings instead.
SHIPPED_RECORDS = Path(__file__).with_name("cost_records.json")


def chemistry(numbers) -> str:
    """The chemical system of a structure: its element symbols, sorted, joined by '-' (e.g. ``Ge-Si``)."""
    from ase.data import chemical_symbols

    return "-".join(sorted({chemical_symbols[int(z)] for z in np.unique(numbers)}))


@dataclass(frozen=True)
class CostRecord:
    """One DFT single point: its chemical system, valence electrons, k-points and core-seconds."""

    chemistry: str
    electrons: float
    kpoints: int
    core_seconds: float
    source: str = ""


@dataclass(frozen=True)
class CostModel:
    """DFT core-seconds of a structure (see the module docstring).

    Attributes
    ----------
    protocol : str
        The DFT protocol of the records.
    constants : dict
        a_c per chemical system.
    electron_exponent, kpoint_exponent : float
        b and g.
    rms_log_residual : float
        Root-mean-square of log(recorded / fitted) over the records (0.1 ≈ 10 %).
    n_records : int
        Records fitted.
    """

    protocol: str
    constants: dict
    electron_exponent: float
    kpoint_exponent: float
    rms_log_residual: float
    n_records: int

    def core_seconds(self, numbers, cell) -> float:
        """Estimated DFT core-seconds of the structure (atomic numbers, cell rows in Å)."""
        from ..chemistry import hgh_valence

        chem = chemistry(numbers)
        if chem not in self.constants:
            known = ", ".join(sorted(self.constants))
            raise InputError(f"no recorded DFT timings for {chem} structures (the data sets have {known}); "
                             "give a data set of that chemistry to --cost-data")
        n_k = math.prod(_settings(self.protocol).kpts_for(np.asarray(cell)))
        return float(math.exp(self.constants[chem] + self.electron_exponent * math.log(hgh_valence(numbers))
                              + self.kpoint_exponent * math.log(n_k)))

    def to_dict(self) -> dict:
        return asdict(self)


def _settings(protocol: str):
    """The DFT settings of ``protocol`` (its k-mesh rule); the library's defaults for a protocol not registered."""
    from ..datagen.settings import PROTOCOLS, DFTSettings

    return PROTOCOLS.get(protocol) or DFTSettings()


def records_from_datasets(directories: Sequence[str | Path], *, protocol: str) -> list[CostRecord]:
    """The DFT timings recorded by the data sets in ``directories`` (snapshots of ``protocol`` only)."""
    from ..chemistry import hgh_valence
    from ..data import read_manifest

    settings = _settings(protocol)
    out = []
    for d in directories:
        d = Path(d)
        for e in read_manifest(d)["snapshots"]:
            t = e.get("dft_core_seconds")
            if not t or e.get("protocol") != protocol or not (d / e["file"]).is_file():
                continue
            with np.load(d / e["file"], allow_pickle=False) as z:
                numbers, cell = z["numbers"], z["cell"]
            out.append(CostRecord(chemistry(numbers), float(hgh_valence(numbers)),
                                  math.prod(settings.kpts_for(cell)), float(t), f"{d.name}/{e['name']}"))
    return out


def fit(records: Sequence[CostRecord], *, protocol: str) -> CostModel:
    """Least-squares fit of the module's power law to ``records`` (log space)."""
    if not records:
        raise InputError(f"no recorded DFT timings of protocol {protocol!r} in the cost data; give data sets made "
                         "by `bigdens datagen` with that protocol")
    chems = sorted({r.chemistry for r in records})
    y = np.log([r.core_seconds for r in records])
    onehot = np.array([[r.chemistry == c for c in chems] for r in records], dtype=float)
    ne = np.log([r.electrons for r in records])
    nk = np.log([float(r.kpoints) for r in records])
    cols = [onehot]
    fixed = np.zeros(len(records))
    b, g = DEFAULT_EXPONENTS
    # Exponents are fitted only where the records vary in that variable within a chemical system.
    vary = lambda v: any(np.ptp(v[onehot[:, j] > 0]) > 1e-9 for j in range(len(chems)))  # noqa: E731
    fit_b, fit_g = vary(ne), vary(nk)
    if fit_b:
        cols.append(ne[:, None])
    else:
        fixed += b * ne
    if fit_g:
        cols.append(nk[:, None])
    else:
        fixed += g * nk
    A = np.hstack(cols)
    coef, *_ = np.linalg.lstsq(A, y - fixed, rcond=None)
    k = len(chems)
    if fit_b:
        b = float(coef[k])
    if fit_g:
        g = float(coef[k + int(fit_b)])
    resid = y - fixed - A @ coef
    return CostModel(protocol=protocol, constants={c: float(coef[j]) for j, c in enumerate(chems)},
                     electron_exponent=b, kpoint_exponent=g, rms_log_residual=float(np.sqrt(np.mean(resid ** 2))),
                     n_records=len(records))


def from_datasets(directories: Sequence[str | Path] | None, *, protocol: str) -> CostModel:
    """:func:`fit` on the timings recorded by the data sets in ``directories`` (None: :data:`SHIPPED_RECORDS`)."""
    if directories is None:
        return fit(shipped_records(protocol=protocol), protocol=protocol)
    return fit(records_from_datasets(directories, protocol=protocol), protocol=protocol)


def shipped_records(*, protocol: str, path: str | Path = SHIPPED_RECORDS) -> list[CostRecord]:
    """The records of ``protocol`` in the shipped timings file (:data:`SHIPPED_RECORDS`)."""
    data = json.loads(Path(path).read_text())
    return [CostRecord(**r) for r in data["protocols"].get(protocol, [])]


def write_records(directories: Sequence[str | Path], path: str | Path = SHIPPED_RECORDS) -> dict:
    """Write every DFT timing the data sets in ``directories`` record, per protocol, to ``path`` (JSON); return it."""
    from .._files import write_text
    from ..data import read_manifest

    protocols = sorted({str(e.get("protocol")) for d in directories for e in read_manifest(Path(d))["snapshots"]
                        if e.get("protocol")})
    data = {"description": "DFT core-seconds of single points, as bigdens datagen recorded them "
                           "(bigdens.active.cost); source: data set/snapshot",
            "protocols": {p: [asdict(r) for r in records_from_datasets(directories, protocol=p)] for p in protocols}}
    write_text(Path(path), json.dumps(data, indent=1) + "\n")
    return data
