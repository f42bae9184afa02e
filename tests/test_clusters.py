"""Cluster profiles: validation before anything is submitted, and the job script they make."""

from __future__ import annotations

import os
import subprocess
import textwrap
import threading
import time

import pytest

from helpers import run_with_and_without_ci

from bigdens import clusters, engine, store, structure
from bigdens.errors import RunError, SetupError

GOOD = """
scheduler: slurm
jobqueue:
  cores: 2
  processes: 1
  memory: 2GB
  walltime: "00:10:00"
  queue: debug
  interface: lo
  job_script_prologue: ["echo prologue-line"]
bigdens:
  jobs: 3
  threads_per_worker: 2
"""


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_shipped_profiles_validate():
    found = clusters.list_profiles()
    assert {"local-slurm", "cpu-partition", "gpu-partition"} <= set(found)
    for name in found:
        clusters.load_profile(name)
    gpu = clusters.load_profile("gpu-partition")
    assert "--gres=gpu:1" in gpu.jobqueue["job_extra_directives"] and gpu.jobqueue["processes"] == 1


def test_job_script_has_directives_and_threads(tmp_path):
    prof = clusters.load_profile(write(tmp_path, GOOD))
    assert prof.jobs == 3 and prof.threads_per_worker == 2
    script = clusters.job_script(prof)
    assert "#SBATCH -p debug" in script
    assert "#SBATCH --cpus-per-task=2" in script  # SLURM reserves the cores ...
    assert "--nthreads 1" in script  # ... while each worker runs one block at a time
    assert "export NUMBA_NUM_THREADS=2" in script and "echo prologue-line" in script
    assert "--interface lo" in script


@pytest.mark.parametrize(
    "edit, message",
    [
        (("queue: debug", "queu: debug"), "unknown jobqueue key 'queu'"),
        (("jobs: 3", "jobz: 3"), "unknown bigdens key 'jobz'"),
        (("memory: 2GB", "memory: lots"), "is not a size like '16GB'"),
        (("walltime: \"00:10:00\"", "walltime: \"ten minutes\""), "is not HH:MM:SS"),
        (("cores: 2", "cores: two"), "jobqueue.cores' must be int"),
        (("processes: 1", "processes: 4"), "processes <= cores"),
        (("threads_per_worker: 2", "threads_per_worker: 8"), "exceeds the 2 core"),
        (("jobs: 3", "jobs: 3\n  max_cores_per_job: 1"), "more than this cluster allows per job"),
        (("  memory: 2GB\n", ""), "missing required key jobqueue.memory"),
        (("scheduler: slurm", "scheduler: slurm\nfoo: 1"), "unknown top-level key"),
        (("queue: debug", "queue: [debug"), "not valid YAML"),
        (("queue: debug", "partition: debug"),
         r"unknown jobqueue key 'partition' \(SLURM's 'partition' is queue here\)"),
        (("bigdens:\n  jobs: 3\n  threads_per_worker: 2", "bigdens: [3, 2]"), "'bigdens' must be a mapping"),
        (("[\"echo prologue-line\"]", "[1]"), "job_script_prologue must be a list of strings"),
        (("jobs: 3", "jobs: 3\n  block: 0"), "bigdens.block must be >= 1, got 0"),
        (("jobs: 3", "jobs: 3\n  wait_for_workers_s: -1"), "wait_for_workers_s must be a positive number"),
        (("interface: lo", "interface: lo\n  scheduler_options: {dashbord_address: ':0'}"),
         "unknown jobqueue.scheduler_options key 'dashbord_address'; allowed: .*dashboard_address"),
        (("jobs: 3", "jobs: 3\n  security: {tls_ca_fil: ca.pem}"), "unknown bigdens.security key 'tls_ca_fil'"),
        (("memory: 2GB", "memory: '2048'"), "is not a size like '16GB'"),  # bare number: MB to SLURM, bytes to dask
    ],
)
def test_bad_profiles_fail_before_submission(tmp_path, edit, message):
    with pytest.raises(SetupError, match=message) as info:
        clusters.load_profile(write(tmp_path, GOOD.replace(*edit)))
    assert "p.yaml" in str(info.value) or "unknown cluster profile" in str(info.value)


def test_jobqueue_not_a_mapping(tmp_path):
    with pytest.raises(SetupError, match=r"p.yaml: 'jobqueue' must be a mapping .*got \[2, '2GB'\]"):
        clusters.load_profile(write(tmp_path, "jobqueue: [2, 2GB]\n"))


@pytest.mark.parametrize("memory", ["16G", "16GB", "500MiB", "1.5 TB", "4gi"])
def test_memory_as_slurm_and_dask_write_it(tmp_path, memory):
    prof = clusters.load_profile(write(tmp_path, GOOD.replace("memory: 2GB", f"memory: {memory}")))
    assert "#SBATCH --mem=" in clusters.job_script(prof)


def test_profile_name_is_the_slurm_job_name(tmp_path):
    prof = clusters.load_profile(write(tmp_path, GOOD.replace("queue: debug", "queue: debug\n  name: al-density")))
    assert "#SBATCH -J al-density" in clusters.job_script(prof)


def test_job_script_starts_nothing_so_site_interfaces_need_not_exist_here(capsys):
    # The templates name ib0, which this machine need not have: showing their script must still work.
    from bigdens.cli import main

    script = clusters.job_script(clusters.load_profile("cpu-partition"))
    assert "<scheduler-address>" in script and "--interface ib0" in script and "#SBATCH --exclusive" in script
    assert main(["clusters", "gpu-partition"]) == 0
    assert "#SBATCH --gres=gpu:1" in capsys.readouterr().out


def test_no_sbatch_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from ase.io import write as ase_write

    from bigdens.cli import main
    from helpers import make_model

    ase_write(tmp_path / "al.xyz", structure.fcc_al((1, 1, 1)))
    model = make_model(tmp_path / "al.safetensors")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sinfo or squeue
    assert main(["predict", "al.xyz", "--model", str(model), "--cluster", "slurm:local-slurm", "--out", "o.zarr",
                 "--allow-out-of-domain"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["bigdens predict: error: no 'sbatch' on PATH: this machine is not a SLURM "
                                         "submit host (run on a login node, or use --cluster local)"]
    assert not (tmp_path / "o.zarr").exists()


def test_unknown_profile_and_missing_sbatch(tmp_path, monkeypatch):
    with pytest.raises(SetupError, match="unknown cluster profile 'nope'.*local-slurm"):
        clusters.load_profile("nope")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="no 'sbatch' on PATH"):
        clusters.require_slurm()


@pytest.mark.slurm
def test_job_larger_than_any_node_refused(tmp_path, local_slurm, capsys):
    from ase.io import write as ase_write

    from bigdens.cli import main

    big = write(tmp_path, GOOD.replace("cores: 2", "cores: 4096").replace("threads_per_worker: 2",
                                                                        "threads_per_worker: 1"))
    with pytest.raises(SetupError, match="largest node has"):
        clusters.check_node_fits(clusters.load_profile(big))
    # The same through the command line: one line, exit status 2, nothing submitted or written.
    from helpers import make_model

    ase_write(tmp_path / "al.xyz", structure.fcc_al((1, 1, 1)))
    model = make_model(tmp_path / "al.safetensors")
    assert main(["predict", "al.xyz", "--model", str(model), "--cluster", f"slurm:{big}", "--grid", "8", "8", "8",
                 "--block", "8", "--out", "o.zarr"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("bigdens predict: error: ") and "jobqueue.cores=4096 but the " \
        f"largest node has {os.cpu_count()} CPUs" in err[0], err
    assert not (tmp_path / "o.zarr").exists() and _squeue() == []


@pytest.mark.slow
def test_slurm_tests_fail_instead_of_skipping_in_ci(tmp_path):
    """With CI=true a SLURM test whose SLURM does not answer fails; elsewhere it skips with the reason."""
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    node = f"{tests / 'test_clusters.py'}::test_job_larger_than_any_node_refused"
    # sinfo cannot read this slurm.conf: for the test process SLURM is not there (the daemons run on).
    results = run_with_and_without_ci(node, {"SLURM_CONF": str(tmp_path / "missing.conf")})
    assert results["true"][0] == 1 and "1 error" in results["true"][1], results["true"][1][-2000:]
    assert "with CI=true the SLURM tests must run" in results["true"][1]
    assert results[""][0] == 0 and "1 skipped" in results[""][1], results[""][1][-2000:]
    assert "the local SLURM is not running" in results[""][1]


# -- the real single-node SLURM ------------------------------------------------------------

def _squeue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if line.strip()]


def _wait_queue_empty(timeout=60.0) -> list[str]:
    # scancel is asynchronous: jobs pass through COMPLETING for a moment.
    end = time.monotonic() + timeout
    while (left := _squeue()) and time.monotonic() < end:
        time.sleep(0.5)
    return left


@pytest.fixture
def slurm_run(tmp_path, local_slurm):
    """(atoms, config maker) for engine runs on a small Al cell with an untrained model."""
    from helpers import config, make_model

    assert _wait_queue_empty() == [], "jobs of an earlier run are still queued"
    model = make_model(tmp_path / "al.safetensors")
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)

    def cfg(name, **kw):
        return config(tmp_path / name, model, **kw)

    return atoms, cfg


@pytest.mark.slurm
def test_slurm_run_equals_local_cluster_and_leaves_no_jobs(slurm_run):
    from helpers import assert_identical, variables

    atoms, cfg = slurm_run
    local = cfg("local.zarr", workers=2)
    assert engine.run(atoms, local).complete
    c = cfg("slurm.zarr", cluster="slurm:local-slurm", workers=1)
    got = engine.run(atoms, c)
    assert got.complete and got.n_computed == got.n_blocks == 27
    # Every block ran inside a SLURM job (the worker saw SLURM_JOB_ID), in at most the profile's 2 jobs.
    assert None not in got.slurm_jobs and sum(got.slurm_jobs.values()) == 27
    assert 1 <= len(got.slurm_jobs) <= c.profile.jobs
    assert_identical(variables(c.out), variables(local.out))
    assert _wait_queue_empty() == []


@pytest.mark.slurm
def test_killed_jobs_are_replaced_and_the_result_is_unchanged(slurm_run):
    import dask

    from helpers import assert_identical, variables

    atoms, cfg = slurm_run
    # More, smaller blocks so that the run is still going when its jobs are killed.
    c = cfg("killed.zarr", cluster="slurm:local-slurm", workers=1, spacing=0.25, block=4, mc_samples=5)
    ref_c = cfg("killed-ref.zarr", spacing=0.25, block=4, mc_samples=5, workers=0)
    engine.run(atoms, ref_c)
    result, killed = {}, []

    def kill_all_jobs_once_a_block_is_done():
        end = time.monotonic() + 300
        while time.monotonic() < end and not result:
            if c.out.exists() and len(store.read_ledger(c.out)) >= 1:
                killed.extend(line.split()[0] for line in _squeue())
                subprocess.run(["scancel", *killed], check=True)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_all_jobs_once_a_block_is_done)
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
        killer.start()
        result["summary"] = got = engine.run(atoms, c)
        killer.join()
    assert killed, "the run ended before any job could be killed"
    assert got.complete and got.n_blocks == len(store.read_ledger(c.out))
    # Blocks were computed by replacement jobs, not only by the killed ones.
    assert set(got.slurm_jobs) - set(killed), (got.slurm_jobs, killed)
    assert None not in got.slurm_jobs
    assert_identical(variables(c.out), variables(ref_c.out))
    assert _wait_queue_empty() == []


@pytest.mark.slurm
def test_bad_profile_fails_before_any_submission(tmp_path, local_slurm):
    from bigdens.config import PredictConfig

    bad = write(tmp_path, GOOD.replace("queue: debug", "partiton: debug"))
    with pytest.raises(SetupError, match="unknown jobqueue key 'partiton'"):
        PredictConfig(out=tmp_path / "o.zarr", cluster=f"slurm:{bad}")
    assert _squeue() == []


@pytest.mark.slurm
def test_job_slurm_would_refuse_fails_before_submission(tmp_path, local_slurm):
    prof = clusters.load_profile(write(tmp_path, GOOD.replace("memory: 2GB", "memory: 900GB")))
    with pytest.raises(SetupError, match="SLURM would refuse the jobs of profile 'p' .*not available"):
        with clusters.slurm_client(prof, n_tasks=1):
            pass
    assert _squeue() == []


@pytest.mark.slurm
def test_no_worker_in_time_names_the_job_state_and_cancels(tmp_path, local_slurm):
    # A job holding every CPU of the node keeps the profile's job PENDING (Resources).
    blocker = subprocess.run(["sbatch", "--parsable", "-c", str(os.cpu_count()), "--wrap", "sleep 600"],
                             capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        prof = clusters.load_profile(write(tmp_path, GOOD.replace("threads_per_worker: 2", "threads_per_worker: 1\n  wait_for_workers_s: 5")))
        with pytest.raises(RunError, match=r"no Dask worker connected within 5 s.*job \d+: PENDING \((Resources|Priority)\), "
                                           r"position 1 of 1 pending in partition debug"):
            with clusters.slurm_client(prof, n_tasks=1):
                pass
    finally:
        subprocess.run(["scancel", blocker])
    assert _wait_queue_empty() == []


@pytest.mark.slurm
@pytest.mark.parametrize("log_directory", [None, "logs"])
def test_jobs_that_die_at_once_fail_fast_with_their_error(tmp_path, local_slurm, log_directory):
    # A prologue that fails (a missing module, say) ends every job before its worker starts.
    text = (GOOD.replace("threads_per_worker: 2", "threads_per_worker: 1\n  wait_for_workers_s: 120")
            .replace("echo prologue-line", "echo no-such-module >&2; exit 3"))
    if log_directory:
        (tmp_path / log_directory).mkdir()
        text = text.replace("interface: lo", f"interface: lo\n  log_directory: {tmp_path / log_directory}")
    prof = clusters.load_profile(write(tmp_path, text))
    output = r"logs/dask-worker-\d+\.err" if log_directory else r"slurm-\d+\.out"
    t0 = time.monotonic()
    with pytest.raises(RunError, match=r"all 1 SLURM job\(s\) of profile 'p' ended before a Dask worker connected: "
                                       rf"job \d+ \(.*{output}\): no-such-module\. Fix .*p\.yaml"):
        with clusters.slurm_client(prof, n_tasks=1):
            pass
    assert time.monotonic() - t0 < 60  # not the 120 s wait
    assert _wait_queue_empty() == []


@pytest.mark.slurm
def test_scheduler_that_cannot_start_here_is_a_setup_error(tmp_path, local_slurm):
    text = GOOD.replace("interface: lo", "interface: lo\n  scheduler_options: {interface: nosuch0}")
    prof = clusters.load_profile(write(tmp_path, text))
    with pytest.raises(SetupError, match=r"p\.yaml: cannot start the Dask scheduler on this machine .*'nosuch0' is not "
                                         r"a valid network interface.*Nothing was submitted"):
        with clusters.slurm_client(prof, n_tasks=1):
            pass
    assert _squeue() == []


@pytest.mark.slurm
def test_scheduler_file_batch_script_on_slurm(slurm_run, tmp_path):
    """cluster_configs/sbatch-scheduler-file.sh: scheduler + srun workers in one allocation."""
    import sys
    from pathlib import Path

    from ase.io import write as ase_write

    from helpers import assert_identical, variables

    atoms, cfg = slurm_run
    ase_write(tmp_path / "al.xyz", atoms)
    atoms = structure.read(tmp_path / "al.xyz")  # the positions the job reads (extxyz rounds them)
    ref = cfg("ref.zarr")
    engine.run(atoms, ref)
    script = Path(clusters.__file__).resolve().parent.parent / "cluster_configs" / "sbatch-scheduler-file.sh"
    if not script.is_file():
        pytest.skip("the example batch script is not installed with the package")
    out = tmp_path / "sf.zarr"
    args = f"--model {ref.model} --spacing {ref.spacing} --block {ref.block[0]} --mc-samples {ref.mc_samples} --seed {ref.seed}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "STRUCTURE": str(tmp_path / "al.xyz"), "OUT": str(out), "PREDICT_ARGS": args + " --allow-out-of-domain",
               "INTERFACE": "lo"}
    proc = subprocess.run(["sbatch", "--wait", "--parsable", "-o", str(tmp_path / "job.out"), "-t", "10",
                           str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert proc.returncode == 0, log[-3000:] + proc.stderr
    assert store.read_attrs(out)["complete"] is True
    assert_identical(variables(out), variables(ref.out))
    assert _wait_queue_empty() == []


@pytest.mark.slurm
def test_ctrl_c_cancels_every_job(slurm_run, tmp_path):
    import signal
    import sys

    from ase.io import write as ase_write

    atoms, cfg = slurm_run
    c = cfg("int.zarr", cluster="slurm:local-slurm", workers=1, spacing=0.25, block=4)
    ase_write(tmp_path / "al.xyz", atoms)
    proc = subprocess.Popen([sys.executable, "-m", "bigdens", "predict", str(tmp_path / "al.xyz"), "--model",
                             str(c.model), "--spacing", "0.25", "--block", "4", "--mc-samples", "5",
                             "--cluster", "slurm:local-slurm", "--out", str(c.out), "--allow-out-of-domain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A test run started in the background inherits SIGINT ignored; a terminal's is not.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None:
            if c.out.exists() and len(store.read_ledger(c.out)) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert _squeue(), "no SLURM job while the run goes on"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert store.read_attrs(c.out)["complete"] is not True
    assert _wait_queue_empty() == []


@pytest.mark.slurm
def test_predict_dry_run_prints_the_job_script_and_submits_nothing(tmp_path, local_slurm, capsys):
    from ase.io import write as ase_write

    from bigdens.cli import main

    ase_write(tmp_path / "al.xyz", structure.fcc_al((2, 2, 2)))
    prof = write(tmp_path, GOOD)
    args = ["predict", str(tmp_path / "al.xyz"), "--dry-run", "--grid", "64", "64", "64", "--block", "32",
            "--out", str(tmp_path / "o.zarr")]
    assert main(args + ["--cluster", f"slurm:{prof}"]) == 0
    out = capsys.readouterr().out
    # 8 blocks, the profile allows 3 jobs of 1 worker each
    assert "grid (64, 64, 64), 8 blocks; would submit 3 job(s) of profile p" in out
    assert "#SBATCH -p debug" in out and "export NUMBA_NUM_THREADS=2" in out
    assert "SLURM accepts this job script (sbatch --test-only)" in out
    # The dry run asks SLURM as a real run would: a job no partition can hold is refused with SLURM's reason.
    big = write(tmp_path, GOOD.replace("memory: 2GB", "memory: 900GB"), name="big.yaml")
    assert main(args + ["--cluster", f"slurm:{big}"]) == 2
    err = capsys.readouterr().err
    assert "SLURM would refuse the jobs of profile" in err and "Nothing was submitted" in err
    assert not (tmp_path / "o.zarr").exists() and _squeue() == []


def test_dry_run_without_sbatch_says_it_did_not_ask_slurm(tmp_path, monkeypatch, capsys):
    from ase.io import write as ase_write

    from bigdens.cli import main

    ase_write(tmp_path / "al.xyz", structure.fcc_al((1, 1, 1)))
    prof = write(tmp_path, GOOD)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sinfo or squeue
    assert main(["predict", str(tmp_path / "al.xyz"), "--cluster", f"slurm:{prof}", "--dry-run",
                 "--out", str(tmp_path / "o.zarr")]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH -p debug" in out and "# not checked against SLURM: no 'sbatch' on PATH here" in out


def test_dry_run_needs_a_slurm_cluster(tmp_path, capsys):
    from ase.io import write as ase_write

    from bigdens.cli import main

    ase_write(tmp_path / "al.xyz", structure.fcc_al((1, 1, 1)))
    assert main(["predict", str(tmp_path / "al.xyz"), "--dry-run", "--out", str(tmp_path / "o.zarr")]) == 2
    assert "--dry-run shows the SLURM job script: use it with --cluster slurm:NAME" in capsys.readouterr().err


def test_local_cluster_listens_on_loopback_only(tmp_path):
    from helpers import config, make_model

    cfg = config(tmp_path / "o.zarr", make_model(tmp_path / "m.safetensors"), workers=2)
    with engine.make_client(cfg, 4) as client:
        info = client.scheduler_info()
        addresses = [client.scheduler.address, *info["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        dashboard = client.dashboard_link or ""
        assert dashboard == "" or "127.0.0.1" in dashboard, dashboard


def _self_signed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=bigdens-test"], check=True, capture_output=True)
    return str(key), str(cert)


@pytest.mark.slurm
def test_slurm_run_over_tls_from_the_profile(slurm_run, tmp_path):
    import yaml

    from helpers import assert_identical, variables

    atoms, cfg = slurm_run
    key, cert = _self_signed(tmp_path)
    raw = yaml.safe_load(clusters.load_profile("local-slurm").path.read_text())
    raw["bigdens"]["security"] = {"tls_ca_file": cert, "tls_client_cert": cert, "tls_client_key": key,
                                  "tls_scheduler_cert": cert, "tls_scheduler_key": key, "tls_worker_cert": cert,
                                  "tls_worker_key": key, "require_encryption": True}
    prof = write(tmp_path, yaml.safe_dump(raw), name="tls.yaml")
    c = cfg("tls.zarr", cluster=f"slurm:{prof}", workers=1)
    script = clusters.job_script(c.profile)
    assert "tls://" in script and f"--tls-key {key}" in script  # workers join over TLS with the profile's files
    got = engine.run(atoms, c)
    assert got.complete and None not in got.slurm_jobs
    local = cfg("local.zarr", workers=2)
    engine.run(atoms, local)
    assert_identical(variables(c.out), variables(local.out))
    assert _wait_queue_empty() == []
