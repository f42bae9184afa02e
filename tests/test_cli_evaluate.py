"""``bigdens evaluate`` reports the DFT protocol of every snapshot and refuses a mix unless asked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bigdens.cli import main
from bigdens.data import add_snapshot, load, new_manifest

AL4 = Path(__file__).resolve().parent / "data" / "al4"


def _dataset(directory: Path, snapshot, protocol: str) -> Path:
    # A one-snapshot data set whose snapshot records `protocol` (the al4 density, relabelled).
    directory.mkdir()
    snap = dataclasses.replace(snapshot, provenance=dict(snapshot.provenance, protocol=protocol))
    add_snapshot(directory, snap, manifest=new_manifest(protocol=protocol))
    return directory


def test_evaluate_reports_protocols_and_refuses_a_mix(tmp_path, model, capsys):
    first, second = load([AL4])[:2]
    v1 = _dataset(tmp_path / "v1", first, "bigdens-dft-v1")
    v2 = _dataset(tmp_path / "v2", second, "bigdens-dft-v2")
    run = [str(model), "--mc-samples", "2", "--threads", "1"]

    assert main(["evaluate", *run, str(v1), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["protocols"] == ["bigdens-dft-v1"]
    assert [(r["name"], r["protocol"]) for r in res["snapshots"]] == [(first.name, "bigdens-dft-v1")]

    # Two protocols: one error line naming the flag, nothing on stdout.
    assert main(["evaluate", *run, str(v1), str(v2)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bigdens evaluate: error: ")
    assert "bigdens-dft-v1, bigdens-dft-v2" in err and "--allow-mixed-protocols" in err

    assert main(["evaluate", *run, str(v1), str(v2), "--allow-mixed-protocols", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["protocols"] == ["bigdens-dft-v1", "bigdens-dft-v2"]
    assert [(r["name"], r["protocol"]) for r in res["snapshots"]] == [
        (first.name, "bigdens-dft-v1"), (second.name, "bigdens-dft-v2")]

    # The table has a protocol column: each snapshot's, and "mixed" for the overall row.
    assert main(["evaluate", *run, str(v1), str(v2), "--allow-mixed-protocols"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "protocol"
    assert [line.split()[0] for line in lines[1:]] == [first.name, second.name, "overall"]
    assert [line.split()[-1] for line in lines[1:]] == ["bigdens-dft-v1", "bigdens-dft-v2", "mixed"]
