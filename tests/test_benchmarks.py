"""Each benchmark runs at a tiny size, so it cannot rot (timings are not asserted)."""

from __future__ import annotations

import json

from benchmarks import descriptor_throughput


def test_descriptor_throughput_smoke(tmp_path):
    out = tmp_path / "d.json"
    result = descriptor_throughput.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rec = {r["system"]: r for r in result["records"]}
    assert rec["Al"]["n_atoms"] == 4 * 27 and rec["SiGe"]["n_atoms"] == 8 * 8
    assert all(r["points_per_s_per_core"] > 0 and r["block_bytes_max"] > 0 for r in result["records"])
