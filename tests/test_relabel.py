"""``bigdens data relabel``: the same cells computed again under another DFT protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bigdens import data, datagen
from bigdens.cli import main
from bigdens.errors import InputError

AL4 = Path(__file__).parent / "data" / "al4"


def _fake_dft(calls):
    # Plumbing only: a uniform density of the right electron count on the protocol's grid.
    def dft_density(atoms, *, settings, txt=None):
        calls.append((len(atoms), settings.kpts_for(atoms.cell[:])))
        n = 3.0 * len(atoms)
        rho = np.full(settings.gpts_for(atoms.cell[:]), n / atoms.get_volume())
        return rho, {"protocol": settings.protocol, "electron_integral": n, "n_electrons_expected": n,
                     "timing": {"wall_seconds": 1.0, "core_seconds": 1.0}}
    return dft_density


def test_relabel_keeps_structures_names_splits_and_temperatures(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("bigdens.datagen.dft.dft_density", _fake_dft(calls))
    monkeypatch.setattr("bigdens._imports.attempt_import", lambda *a, **k: None)
    src = data.load([AL4])
    out = tmp_path / "v2"
    assert main(["data", "relabel", str(AL4), "--protocol", "v2", "--max-snapshots", "2", "-o", str(out)]) == 0
    assert len(calls) == 2
    assert main(["data", "relabel", str(AL4), "--protocol", "v2", "-o", str(out)]) == 0  # resumes
    assert len(calls) == len(src)  # each cell once
    assert f"2 of {len(src)} snapshots exist; computing {len(src) - 2}" in capsys.readouterr().out
    new = {s.name: s for s in data.load([out])}
    assert sorted(new) == sorted(s.name for s in src)
    for s in src:
        n = new[s.name]
        assert data.structure_digest(n) == data.structure_digest(s)  # the same atoms, bit for bit
        assert (n.split, n.temperature) == (s.split, s.temperature)
        assert n.protocol == "bigdens-dft-v2" and n.provenance["thermalization"]["relabelled_from"] == {
            "name": s.name, "protocol": "bigdens-dft-v1", "structure_digest": data.structure_digest(s)}
    # v2's k-mesh for the 4.05 Å cell: ceil(24 / 4.05) = 6 per direction (v1: 4).
    assert {k for _, k in calls} == {(6, 6, 6)}
    assert main(["data", "relabel", str(AL4), "--protocol", "v2", "--max-snapshots", "0", "-o", str(out)]) == 0
    # Other cells into the same folder: refused, one line; the data set is unchanged.
    assert main(["data", "relabel", str(AL4), "--split", "train", "--protocol", "v2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(data.load([out])) == len(src)
    # The new data set is v2: evaluating it with the v1 cells needs the flag.
    with pytest.raises(InputError, match="allow-mixed-protocols"):
        data.load([AL4, out])


def test_relabel_refuses_its_own_input_as_output(tmp_path, capsys):
    assert main(["data", "relabel", str(AL4), "-o", str(AL4)]) == 2
    assert "one of the inputs" in capsys.readouterr().err


def test_a_label_of_the_same_calculation_is_taken_over(monkeypatch, tmp_path):
    """A v1 cell relabelled to v1 (the same calculation) runs no DFT; to v2 (6×6×6, 800 eV) it would."""
    from importlib.metadata import version

    from bigdens.datagen.relabel import same_calculation

    monkeypatch.setattr("bigdens.datagen.dft.dft_density", lambda *a, **k: pytest.fail("ran DFT"))
    src = [s for s in data.load([AL4]) if s.provenance.get("code_version") == version("gpaw")]
    assert src and all(same_calculation(s, datagen.protocol_settings("v1")) for s in src)
    assert not any(same_calculation(s, datagen.protocol_settings("v2")) for s in src)  # 4×4×4 -> 6×6×6
    out = datagen.relabel(src[:1], tmp_path / "same", dft=datagen.protocol_settings("v1"))
    again = data.load([out])[0]
    np.testing.assert_array_equal(again.density, src[0].density)
    assert again.provenance["thermalization"]["relabelled_from"]["same_calculation"] is True


@pytest.mark.gpaw
def test_gpaw_repeats_a_calculation_bit_for_bit(tmp_path, gpaw):
    """What taking a label over rests on: one 4-atom cell computed again with its own settings gives its label."""
    from bigdens.datagen import compute_snapshot, planned_from

    src = [s for s in data.load([AL4]) if s.split == "validation"][0]
    again = compute_snapshot(planned_from(src), dft=datagen.protocol_settings("v1"))
    np.testing.assert_array_equal(again.density, src.density)
