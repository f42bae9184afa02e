"""The inference engine: cluster vs in-process, brute force, resume, renormalization, bad input."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import zarr

from bigdens import descriptors, engine, store, structure
from bigdens.bnn import load
from bigdens.config import PredictConfig
from bigdens.errors import BigdensError, InputError, RunError, SetupError

from helpers import BLOCK, PARAMS, SPACING, assert_identical, config, make_model, variables


@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_local_cluster_equals_in_process_bit_for_bit(tmp_path, model, atoms):
    ref = engine.run(atoms, config(tmp_path / "ref.zarr", model))
    assert ref.complete and ref.n_blocks == 27 and ref.n_computed == 27
    got = engine.run(atoms, config(tmp_path / "dask.zarr", model, workers=2))
    assert got.complete and got.n_computed == 27
    assert len(got.max_rss_mb) >= 1  # tasks ran in worker processes
    a, b = variables(tmp_path / "ref.zarr"), variables(tmp_path / "dask.zarr")
    assert_identical(a, b)
    assert np.isfinite(a["density"]).all() and (a["density_std"] > 0).all()
    np.testing.assert_allclose(a["density_std"] ** 2, a["density_std_epistemic"] ** 2 + a["density_std_aleatoric"] ** 2,
                               rtol=1e-5)
    assert got.n_electrons_predicted == pytest.approx(ref.n_electrons_predicted, rel=0, abs=0)


@pytest.mark.cuda
def test_cuda_local_cluster_equals_in_process_and_cpu(tmp_path, model, atoms):
    ref = engine.run(atoms, config(tmp_path / "ref.zarr", model, device="cuda"))
    got = engine.run(atoms, config(tmp_path / "dask.zarr", model, device="cuda", workers=2))
    assert ref.device == got.device == "cuda" and got.complete and got.n_computed == 27
    a, b = variables(tmp_path / "ref.zarr"), variables(tmp_path / "dask.zarr")
    assert_identical(a, b)  # two worker processes sharing the GPU: bit for bit the in-process run
    engine.run(atoms, config(tmp_path / "cpu.zarr", model, device="cpu"))
    c = variables(tmp_path / "cpu.zarr")
    np.testing.assert_allclose(a["density"], c["density"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(a["density_std"], c["density_std"], rtol=1e-3, atol=1e-9)


def test_boundary_blocks_equal_brute_force(tmp_path, model, atoms):
    cfg = config(tmp_path / "o.zarr", model)
    engine.run(atoms, cfg)
    out = variables(cfg.out)
    m = load(model)
    attrs = store.read_attrs(cfg.out)
    from bigdens.grid import Grid

    grid = Grid(cell=np.asarray(attrs["cell"]), shape=tuple(attrs["grid_shape"]))
    blocks = store.blocks_of(attrs)
    # The first block and blocks touching the far faces: their halos wrap around the cell.
    edge = [b for b in blocks if b.index == 0 or any(s == n for s, n in zip(b.stop, grid.shape))][:6]
    assert len(edge) == 6
    for b in edge:
        feats = descriptors.compute(atoms.positions, atoms.numbers, atoms.cell[:], grid.points(b.start, b.stop), PARAMS)
        mean, epi, ale = m.predict(feats, samples=cfg.mc_samples, seed=cfg.seed, block_index=b.index, batch=cfg.batch)
        np.testing.assert_allclose(out["density"][b.slices].ravel(), mean, rtol=1e-6, atol=0)
        np.testing.assert_allclose(out["density_std"][b.slices].ravel() ** 2, epi.astype(float) + ale, rtol=1e-5)


def test_epistemic_high_points_and_maximum_agree_with_the_store(tmp_path, model, atoms, capsys):
    plain = engine.run(atoms, config(tmp_path / "plain.zarr", model))
    assert plain.n_epistemic_high is None and "validation 99.9 %" not in plain.format()
    epi = variables(tmp_path / "plain.zarr")["density_std_epistemic"]
    threshold = float(np.quantile(epi, 0.9))
    ref = {"quantiles": [0.5, 0.999], "std": [0.0, threshold]}
    flagged = make_model(tmp_path / "ref.safetensors", info={"epistemic_reference": ref})  # same weights
    part = engine.run(atoms, config(tmp_path / "o.zarr", flagged, max_blocks=5))
    assert part.n_epistemic_high is None and part.max_std_epistemic is None  # not over the whole grid yet
    got = engine.run(atoms, config(tmp_path / "o.zarr", flagged, resume=True))
    epi = variables(tmp_path / "o.zarr")["density_std_epistemic"]
    assert got.n_epistemic_high == np.count_nonzero(epi > np.float32(threshold)) > 0
    assert got.max_std_epistemic == float(epi.max())
    assert tuple(got.max_std_epistemic_index) == np.unravel_index(int(np.argmax(epi)), epi.shape)
    attrs = store.read_attrs(tmp_path / "o.zarr")
    assert attrs["n_epistemic_high"] == got.n_epistemic_high and attrs["epistemic_threshold"] == threshold
    assert "validation 99.9 % quantile" in got.format()
    # `bigdens plot` outlines the same points on a plane and counts them.
    from bigdens.cli import main

    plane = int(np.argmax((epi > np.float32(threshold)).sum(axis=(0, 1))))
    frac = plane / epi.shape[2]
    assert main(["plot", str(tmp_path / "o.zarr"), "--plane", f"z={frac}", "-o", str(tmp_path / "p.png")]) == 0
    n_plane = int(np.count_nonzero(epi[:, :, plane] > np.float32(threshold)))
    assert f"{n_plane} points above the epistemic threshold" in capsys.readouterr().out and n_plane > 0


def test_interrupted_run_resumes_to_identical_store(tmp_path, model, atoms):
    ref = tmp_path / "ref.zarr"
    engine.run(atoms, config(ref, model))
    out = tmp_path / "o.zarr"
    part = engine.run(atoms, config(out, model, max_blocks=10))
    assert not part.complete and part.n_done == 10
    assert store.read_attrs(out)["complete"] is False
    rest = engine.run(atoms, config(out, model, resume=True))
    assert rest.complete and rest.n_computed == 27 - 10  # only the missing blocks
    assert store.read_attrs(out)["complete"] is True
    assert_identical(variables(ref), variables(out))
    again = engine.run(atoms, config(out, model, resume=True))
    assert again.n_computed == 0 and again.complete


def test_resume_refuses_other_settings(tmp_path, model, atoms):
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=2))
    with pytest.raises(SetupError, match="seed: store has 3, this run 4"):
        engine.run(atoms, config(out, model, seed=4, resume=True))
    other = make_model(tmp_path / "other.safetensors", seed=9)
    with pytest.raises(SetupError, match="model_hash"):
        engine.run(atoms, config(out, other, resume=True))
    with pytest.raises(SetupError, match="mc_samples"):
        engine.run(atoms, config(out, model, mc_samples=6, resume=True))
    with pytest.raises(SetupError, match="block"):
        engine.run(atoms, config(out, model, block=4, resume=True))
    with pytest.raises(SetupError, match="structure_hash"):
        engine.run(structure.rattle(atoms, 0.01, seed=5), config(out, model, resume=True))
    assert len(store.read_ledger(out)) == 2


def test_disk_full_mid_run_is_clear_and_resumable(tmp_path, model, atoms, monkeypatch):
    from zarr.storage import LocalStore

    real_set = LocalStore.set
    calls = {"n": 0}

    async def failing_set(self, key, value):
        if key.startswith("density") and "/c/" in key:
            calls["n"] += 1
            if calls["n"] > 4 * 5 + 2:  # part way through the sixth block
                raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    out = tmp_path / "o.zarr"
    monkeypatch.setattr(LocalStore, "set", failing_set)
    with pytest.raises(RunError, match="No space left on device.*--resume"):
        engine.run(atoms, config(out, model))
    monkeypatch.setattr(LocalStore, "set", real_set)
    assert len(store.read_ledger(out)) == 5 and store.read_attrs(out)["complete"] is False
    done = engine.run(atoms, config(out, model, resume=True))
    assert done.complete and done.n_computed == 22
    engine.run(atoms, config(tmp_path / "ref.zarr", model))
    assert_identical(variables(tmp_path / "ref.zarr"), variables(out))
    assert store.verify(out).ok


def test_renormalize_integrates_to_valence_count(tmp_path, model, atoms):
    s = engine.run(atoms, config(tmp_path / "o.zarr", model, renormalize=True))
    attrs = store.read_attrs(tmp_path / "o.zarr")
    dv = attrs["volume_element"]
    rho = variables(tmp_path / "o.zarr")["density"]
    assert attrs["n_electrons_expected"] == 96 == s.n_electrons_expected
    assert rho.sum(dtype=np.float64) * dv == pytest.approx(96, rel=1e-5)
    raw = engine.run(atoms, config(tmp_path / "raw.zarr", model))
    assert attrs["n_electrons_predicted"] == pytest.approx(raw.n_electrons_predicted, rel=1e-12)
    assert attrs["renormalization_factor"] == pytest.approx(96 / raw.n_electrons_predicted)
    assert store.verify(tmp_path / "o.zarr").ok and attrs["complete"] is True


def test_bad_input_is_refused_before_writing(tmp_path, model, atoms):
    si = structure.diamond_sige((1, 1, 1), x=0.0)
    with pytest.raises(InputError, match="species"):
        engine.run(si, config(tmp_path / "a.zarr", model))
    with pytest.raises(SetupError, match="Monte Carlo samples"):
        config(tmp_path / "a.zarr", model, mc_samples=0)
    with pytest.raises(SetupError, match="multiple of the chunk"):
        config(tmp_path / "a.zarr", model, block=12, chunk=8)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SetupError, match="does not exist|not a folder"):
        engine.run(atoms, config(tmp_path / "file" / "a.zarr", model))
    with pytest.raises(SetupError, match="not a bigdens store"):
        engine.run(atoms, config(tmp_path / "file", model))
    with pytest.raises(SetupError, match="unknown cluster profile 'big'"):
        engine.run(atoms, config(tmp_path / "a.zarr", model, workers=2, cluster="slurm:big"))
    assert not (tmp_path / "a.zarr").exists() and (tmp_path / "file").read_text() == "x"
    engine.run(atoms, config(tmp_path / "file", model, overwrite=True, max_blocks=1))
    assert store.read_attrs(tmp_path / "file") is not None
    for err in (InputError, SetupError, RunError):
        assert issubclass(err, BigdensError)


def test_coarse_grid_warns(tmp_path, atoms):
    m = make_model(tmp_path / "m.safetensors", info={"grid_spacing": 0.2})
    with pytest.warns(UserWarning, match="coarser than the model.s training spacing 0.200 Å.*off by up to 0.031 %"):
        engine.run(atoms, config(tmp_path / "o.zarr", m, spacing=0.6, max_blocks=1))
    # 0.45 Å integrates as well as the training grid (benchmarks/results/domain): no note.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        engine.run(atoms, config(tmp_path / "p.zarr", m, spacing=0.45, max_blocks=1))


def test_lazy_top_level_predict(tmp_path, model, atoms):
    import bigdens

    path = bigdens.predict(atoms, config(tmp_path / "o.zarr", model, max_blocks=1))
    assert path == tmp_path / "o.zarr" and store.read_attrs(path)["complete"] is False
    # keyword settings and a structure file do the same as a config object and an Atoms
    atoms.write(tmp_path / "al.xyz")
    kw = dict(model=model, spacing=SPACING, block=BLOCK, workers=0, mc_samples=5, seed=3, progress=False,
              allow_out_of_domain=True)
    a = bigdens.predict(tmp_path / "al.xyz", out=tmp_path / "kw.zarr", **kw)
    b = bigdens.predict(structure.read(tmp_path / "al.xyz"), PredictConfig(out=tmp_path / "cfg.zarr", **kw))
    assert store.read_attrs(a)["complete"] is True
    assert_identical(variables(a), variables(b))
    with pytest.raises(SetupError, match="not both"):
        bigdens.predict(atoms, config(tmp_path / "x.zarr", model), seed=4)
    with pytest.raises(SetupError, match="output store is needed"):
        bigdens.predict(atoms, out="")


def test_shipped_al_model_conserves_electrons(tmp_path):
    """A trained model: bulk Al integrates to 3 valence electrons per atom within 1 %."""
    from bigdens.models import shipped_model_for

    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=5)
    model = shipped_model_for(atoms.numbers)  # raises if the package lacks it
    got = engine.run(atoms, PredictConfig(out=tmp_path / "al.zarr", workers=0, mc_samples=5, progress=False))
    assert got.complete and got.n_electrons_expected == 96
    assert got.n_electrons_predicted == pytest.approx(96, rel=0.01)
    # The default grid is the model's training grid spacing (no coarse-grid warning).
    assert max(store.read_attrs(got.path)["grid_spacing"]) <= load(model).info["grid_spacing"] + 1e-9


def test_shipped_sige_model_is_picked_and_conserves_electrons(tmp_path):
    """The shipped Si-Ge model: a Si0.75Ge0.25 cell integrates to 4 electrons per atom within 1 %."""
    import warnings

    from bigdens.models import shipped_model_for

    atoms = structure.rattle(structure.diamond_sige((2, 2, 2), x=0.25, seed=3), 0.05, seed=5)
    assert shipped_model_for(atoms.numbers).name == "sige.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the training compositions: no warning
        got = engine.run(atoms, PredictConfig(out=tmp_path / "s.zarr", workers=0, mc_samples=5, progress=False))
    assert got.complete and got.n_electrons_expected == 256
    assert got.n_electrons_predicted == pytest.approx(256, rel=0.01)


@pytest.mark.slow
def test_worker_killed_mid_run_result_unchanged(tmp_path, model, atoms):
    """kill -9 one worker process of a 2-worker LocalCluster mid-run: the run completes, bit-identical."""
    import os
    import signal
    import threading
    import time

    import psutil

    ref = config(tmp_path / "ref.zarr", model, mc_samples=400)
    engine.run(atoms, ref)
    c = config(tmp_path / "o.zarr", model, mc_samples=400, workers=2)
    killed = []

    def kill_one_worker_after_first_block():
        end = time.monotonic() + 300
        while time.monotonic() < end and not killed:
            if c.out.exists() and len(store.read_ledger(c.out)) >= 1:
                # LocalCluster's nannies live in this process; its worker processes are our spawned children.
                workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
                if workers:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    killed.append(workers[0].pid)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=kill_one_worker_after_first_block)
    t.start()
    got = engine.run(atoms, c)
    t.join()
    assert killed, "no worker was killed"
    assert got.complete and len(store.read_ledger(c.out)) == got.n_blocks == 27
    assert_identical(variables(c.out), variables(ref.out))


@pytest.mark.slow
def test_soak_2000_blocks_memory_bounded(tmp_path, model, atoms):
    # 13³ = 2,197 blocks of 4³ points on 2 worker processes: a leak per block
    # (arrays, zarr handles, Dask results) would show as a growing peak RSS.
    out = tmp_path / "soak.zarr"
    s = engine.run(atoms, config(out, model, spacing=None, grid=(52, 52, 52), block=4, workers=2,
                                 threads_per_worker=1, mc_samples=2))
    assert s.n_blocks == 2197 and s.n_computed == 2197 and s.complete
    assert len(s.max_rss_mb) == 2 and set(s.first_rss_mb) == set(s.max_rss_mb)
    growth = {pid: s.max_rss_mb[pid] / s.first_rss_mb[pid] - 1 for pid in s.max_rss_mb}
    assert max(growth.values()) < 0.10, growth
    assert store.verify(out).ok


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs mount point (root only) and a function that resizes it; unmounted afterwards."""
    import os
    import shutil
    import subprocess

    def fail_or_skip(why):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + "; with CI=true the disk-full test must run (CI runs as root)")
        pytest.skip(why)

    if os.geteuid() != 0 or shutil.which("mount") is None:
        fail_or_skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "bigdens-test", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        fail_or_skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def resize(n_bytes):
        subprocess.run(["mount", "-o", f"remount,size={n_bytes}", str(mnt)], check=True, capture_output=True)

    yield mnt, resize
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_real_disk_full_is_clear_consistent_and_resumable(tmp_path, model, atoms, small_tmpfs):
    mnt, resize = small_tmpfs
    ref = tmp_path / "ref.zarr"
    engine.run(atoms, config(ref, model))
    # tmpfs charges whole 4 KiB pages per file: room for about half of the store.
    pages = sum(-(-f.stat().st_size // 4096) for f in ref.rglob("*") if f.is_file())
    resize(pages // 2 * 4096)
    out = mnt / "o.zarr"
    with pytest.raises(RunError, match=r"No space left on device.*--resume"):
        engine.run(atoms, config(out, model))
    attrs = store.read_attrs(out)
    assert attrs is not None and attrs["complete"] is False
    report = store.verify(out)
    assert not report.corrupt  # every block the ledger lists is whole: the ledger is consistent
    assert 0 < report.n_blocks - len(report.missing) < report.n_blocks
    n_done = report.n_blocks - len(report.missing)
    resize(64 * 2**20)  # space returns
    done = engine.run(atoms, config(out, model, resume=True))
    assert done.complete and done.n_computed == report.n_blocks - n_done
    assert_identical(variables(ref), variables(out))
    assert store.verify(out).ok


def test_read_only_output_is_one_clear_error(tmp_path, model, atoms, small_tmpfs):
    import subprocess

    mnt, _ = small_tmpfs
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    with pytest.raises(BigdensError, match=r"output folder .*mnt' is not writable; choose another -o/--output"):
        engine.run(atoms, config(mnt / "o.zarr", model))
    assert not (mnt / "o.zarr").exists()


def test_composition_outside_training_range_warns():
    import warnings

    from bigdens.train import training_compositions

    info = {"data": {"train": [{"composition": {"Si": 1.0}}, {"composition": {"Si": 0.5, "Ge": 0.5}}]}}
    assert training_compositions(info) == {"Ge": (0.0, 0.5), "Si": (0.5, 1.0)}
    alloy = structure.diamond_sige((2, 2, 2), x=0.75, seed=1).numbers
    with pytest.warns(UserWarning, match=r"75% Ge, outside the model's training compositions \(0%–50% Ge\)"):
        engine._warn_composition(alloy, info)
    inside = structure.diamond_sige((2, 2, 2), x=0.25, seed=1).numbers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine._warn_composition(inside, info)
        engine._warn_composition(alloy, {})  # a model without recorded compositions: silent


@pytest.mark.cuda
def test_cuda_run_equals_the_cpu_run(tmp_path, model):
    # With --device cuda the descriptors are computed on the GPU (bigdens._descriptor_cuda) and handed to
    # the network as a CUDA tensor; the densities agree with the CPU run to float32 rounding.
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=3)
    cpu = engine.run(atoms, config(tmp_path / "cpu.zarr", model, device="cpu"))
    gpu = engine.run(atoms, config(tmp_path / "gpu.zarr", model, device="cuda"))
    assert cpu.complete and gpu.complete
    a, b = variables(tmp_path / "cpu.zarr"), variables(tmp_path / "gpu.zarr")
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=2e-5, atol=1e-6)


def test_without_numba_cuda_the_descriptors_fall_back_to_the_cpu(monkeypatch, tmp_path, model):
    # torch sees a GPU but numba does not (no CUDA toolkit for numba): the run warns once in the driver and
    # the workers compute the descriptors on the CPU (the network alone would run on the GPU).
    import bigdens._descriptor_cuda as dc
    from bigdens.blocks import block_halo, make_blocks
    from bigdens.celllist import build_cell_list
    from bigdens.engine import plan as plan_mod, worker
    from bigdens.grid import make_grid

    monkeypatch.setattr(dc, "available", lambda: False)
    worker._cuda_descriptors.cache_clear()
    monkeypatch.setattr(plan_mod, "resolve_device", lambda request: "cuda")
    atoms = structure.rattle(structure.fcc_al((1, 1, 1)), 0.05, seed=1)
    with pytest.warns(UserWarning, match="numba does not .* the descriptors run on the CPU"):
        plan_mod.plan_run(atoms, config(tmp_path / "x.zarr", model, device="cpu"))
    params = load(model).params
    grid = make_grid(atoms.cell[:], shape=(8, 8, 8))
    b = make_blocks(grid.shape, 4)[0]
    halo = block_halo(build_cell_list(atoms.cell[:], atoms.positions), atoms.numbers, grid, b, params.r_cut)
    ctx = worker._Context(grid=grid, blocks=[b], atoms=None, arrays={}, model=None, device="cuda")
    got = worker._block_features(halo, ctx, b, params)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, descriptors.compute_block(halo, grid, b, params).reshape(-1, params.n_features))
    worker._cuda_descriptors.cache_clear()
