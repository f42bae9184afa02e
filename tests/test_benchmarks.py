"""Each benchmark runs at a tiny size, so it cannot rot (timings are not asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import descriptor_throughput


def test_descriptor_throughput_smoke(tmp_path):
    out = tmp_path / "d.json"
    result = descriptor_throughput.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rec = {r["system"]: r for r in result["records"]}
    assert rec["Al"]["n_atoms"] == 4 * 27 and rec["SiGe"]["n_atoms"] == 8 * 8
    assert all(r["points_per_s_per_core"] > 0 and r["block_bytes_max"] > 0 for r in result["records"])


def test_engine_throughput_smoke(tmp_path):
    from benchmarks import engine_throughput

    out = tmp_path / "e.json"
    result = engine_throughput.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (rec,) = result["records"]
    assert rec["n_atoms"] == 32 and rec["n_blocks_computed"] == 2 and rec["points_per_s_steady"] > 0
    assert rec["bnn_gflops_per_worker"] > 0 and rec["torch_bmm_gflops_1_thread"] > 0
    assert set(rec["stage_s"]) >= {"descriptors", "bnn", "write"}


def test_million_atoms_smoke(tmp_path):
    from benchmarks import million_atoms

    out = tmp_path / "m.json"
    with pytest.warns(UserWarning, match="coarser than the model's training spacing"):
        result = million_atoms.main(["--cells", "2", "--spacing", "0.5", "--mc-samples", "2", "--workers", "1",
                                     "--block", "16", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["n_atoms"] == 32 and result["complete"] and result["grid"] == [17, 17, 17]
    assert result["n_electrons_expected"] == 96 and result["peak_rss_mb_per_worker"]
