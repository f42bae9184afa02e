"""Size guards (bigdens.resources): the estimates bound what a run really uses, and absurd sizes are refused
before anything starts, with the estimate and the flag that forces them."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.io import write

from bigdens import engine, resources, structure
from bigdens.cli import main
from bigdens.config import PredictConfig

from helpers import BLOCK, SPACING, make_model


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_estimate_bounds_the_real_run(tmp_path):
    """Peak RSS of the worker and bytes on disk stay below the estimate, and not far below it."""
    model = make_model(tmp_path / "m.safetensors")
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)
    config = PredictConfig(out=tmp_path / "o.zarr", model=model, spacing=SPACING, block=BLOCK * 2, workers=1,
                           mc_samples=20, progress=False, allow_out_of_domain=True)
    summary = engine.run(atoms, config)
    m = engine.load_model(model, "")
    grid = engine.run_grid(atoms, config, m)
    from bigdens.blocks import block_shape_for

    est = resources.estimate_predict(
        n_atoms=len(atoms), volume=grid.volume, grid_shape=grid.shape, block_shape=block_shape_for(grid.shape, BLOCK * 2),
        samples=20, n_features=m.params.n_features, r_cut=m.params.r_cut, hidden=tuple(m.arch.hidden),
        kind=m.arch.kind, batch=config.batch)
    peak = max(summary.max_rss_mb.values()) * 2**20
    assert peak < est.memory_per_worker < 3 * peak
    assert est.n_tasks == summary.n_blocks
    assert _dir_bytes(config.out) < est.disk


def test_sample_count_that_cannot_fit_is_refused_then_forced(tmp_path, capsys, monkeypatch):
    model = make_model(tmp_path / "m.safetensors")
    write(tmp_path / "al.xyz", structure.fcc_al((1, 1, 1)))
    args = ["predict", str(tmp_path / "al.xyz"), "--model", str(model), "--grid", "8", "8", "8", "--block", "8",
            "--workers", "0", "--mc-samples", "200", "--allow-out-of-domain", "--out", str(tmp_path / "o.zarr")]
    # A machine with 500 MB free: the worker's own ~450 MB plus 200 samples' buffers do not fit.
    monkeypatch.setattr(resources, "available_memory", lambda: 500 * 2**20)
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "of memory per process, but 524 MB is available" in err[0]
    assert "--skip-size-check" in err[0] and not (tmp_path / "o.zarr").exists()
    assert main([*args, "--skip-size-check"]) == 0
    assert (tmp_path / "o.zarr").is_dir()


@pytest.mark.parametrize("argv, message", [
    (["predict", "al.xyz", "--spacing", "0.002", "--out", "o.zarr"], "would write about"),
    (["predict", "al.xyz", "--spacing", "0.01", "--block", "2", "--out", "o.zarr"], "blocks (at most 2,000,000)"),
    (["predict", "al.xyz", "--mc-samples", "100000000", "--out", "o.zarr"], "of memory per process"),
    (["describe", "al.xyz", "--r-cut", "1000", "--m", "4"], "lower --r-cut or --block"),
    (["build", "al", "--cells", "1000", "1000", "1000", "-o", "big.xyz"], "build fewer --cells"),
])
def test_absurd_sizes_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    write("al.xyz", structure.fcc_al((2, 2, 2)))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0] and "--skip-size-check" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_disk_that_cannot_hold_the_store_is_refused(tmp_path, monkeypatch):
    model = make_model(tmp_path / "m.safetensors")
    monkeypatch.setattr(resources, "free_disk", lambda path: 10_000)  # a nearly full disk
    from bigdens.errors import SetupError

    with pytest.raises(SetupError, match="would write about .* but 10 kB is free"):
        engine.run(structure.fcc_al((2, 2, 2)), PredictConfig(out=tmp_path / "o.zarr", model=model, workers=0,
                                                              progress=False, allow_out_of_domain=True))
    assert not (tmp_path / "o.zarr").exists()
