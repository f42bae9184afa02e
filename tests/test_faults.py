"""Worker faults and signals as a user meets them: a stopped worker, workers killed again and again,
Ctrl-C and SIGTERM (also from SLURM's scancel) to a running ``bigdens predict``.

Each ends in one line on stderr (or a finished run), leaves no worker behind, and
``--resume`` finishes the store bit for bit like an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from ase.io import write

from bigdens import engine, store, storelock, structure
from bigdens.config import PredictConfig
from bigdens.errors import SetupError

from helpers import BLOCK, SPACING, assert_identical, config, make_model, variables

#: The 18³ grid of helpers.SPACING in 27 blocks; 1000 samples make a block slow enough to act on a run part way.
SAMPLES, N_BLOCKS = 1000, 27
#: Waits for a subprocess, s (a hung run fails the test instead of hanging it).
WAIT_S = 420


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(structure file, model file, reference store): the reference computed in this process, without Dask."""
    d = tmp_path_factory.mktemp("faults")
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)
    atoms.wrap()  # no "atoms outside the cell" warning on stderr
    write(d / "al.xyz", atoms)
    model = make_model(d / "m.safetensors")
    ref = d / "ref.zarr"
    # The reference reads the same file as the runs (extxyz rounds positions).
    engine.run(structure.read(d / "al.xyz"), config(ref, model, mc_samples=SAMPLES))
    return d / "al.xyz", model, ref


def predict_cmd(xyz, model, out, *extra, cluster=("--workers", "2")) -> list[str]:
    return [sys.executable, "-m", "bigdens", "predict", str(xyz), "--model", str(model), "--spacing", str(SPACING),
            "--block", str(BLOCK), "--mc-samples", str(SAMPLES), "--seed", "3", "--out", str(out),
            "--allow-out-of-domain", *cluster, *extra]


def start(cmd) -> subprocess.Popen:
    # A session of its own: signals to its process group reach the run and its workers, not pytest.  SIGINT
    # as in a terminal (pytest started in the background hands it down ignored, and an ignored SIGINT stays so).
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(p: subprocess.Popen) -> tuple[str, str]:
    try:
        return p.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"the run did not end within {WAIT_S} s; stderr: {err[-2000:]}")


def wait_for_blocks(out, n: int, p: subprocess.Popen | None = None) -> int:
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end and (p is None or p.poll() is None):
        done = len(store.read_ledger(out)) if (out / "zarr.json").exists() else 0
        if done >= n:
            return done
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} blocks of {out} were done in time (the run ended: {p and p.poll()})")


def workers_of(pid: int) -> list[int]:
    """The Dask worker processes of a local cluster: spawned children of the driver."""
    import psutil

    found = []
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:  # the driver ended
        return []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def errors(stderr: str) -> list[str]:
    """Lines of stderr other than bigdens' own warnings."""
    return [line for line in stderr.splitlines() if not line.startswith("bigdens predict: warning: ")]


def resume_and_compare(xyz, model, out, ref) -> None:
    r = subprocess.run(predict_cmd(xyz, model, out, "--resume"), capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0 and f"complete: {N_BLOCKS}/{N_BLOCKS} blocks" in r.stdout, r.stdout + r.stderr
    compare(out, ref)


def compare(out, ref) -> None:
    """The store ``out`` is complete and bit for bit the reference (ledger checksums and arrays)."""
    got, want = store.read_ledger(out), store.read_ledger(ref)
    assert sorted(got) == sorted(want) == list(range(N_BLOCKS))
    assert {i: e.checksums for i, e in got.items()} == {i: e.checksums for i, e in want.items()}
    assert_identical(variables(out), variables(ref))
    assert store.read_attrs(out)["complete"] is True


# -- the parts, in this process ---------------------------------------------------------------

def test_block_timeout_follows_the_longest_block_and_is_validated(tmp_path):
    assert engine.block_timeout(None) == engine.BLOCK_TIMEOUT_SETUP_S  # before any block finished
    assert engine.block_timeout(1.0) == engine.BLOCK_TIMEOUT_FLOOR_S
    assert engine.block_timeout(60.0) == 60.0 * engine.BLOCK_TIMEOUT_FACTOR
    assert engine.block_timeout(60.0, 5) == engine.block_timeout(None, 5) == 5.0
    for bad in (0, -1, float("nan"), "10", True):
        with pytest.raises(SetupError, match=r"block_timeout must be a positive number of seconds.*--block-timeout"):
            PredictConfig(out=tmp_path / "o.zarr", block_timeout=bad)
    from bigdens.cli import main

    assert main(["predict", "x.xyz", "--out", "o.zarr", "--block-timeout", "0"]) == 2
    assert not (tmp_path / "o.zarr").exists()


def test_local_workers_never_see_sigint_or_sigterm(tmp_path):
    """Worker processes start with both signals blocked (so a terminal's Ctrl-C reaches the driver alone);
    the driver's own thread keeps them."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    cfg = PredictConfig(out=tmp_path / "o.zarr", workers=2, progress=False)
    with engine.make_client(cfg) as client:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        pids = client.run(os.getpid)
        assert len(pids) == 2
        for pid in pids.values():
            with open(f"/proc/{pid}/status") as f:
                blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
            assert blocked & (1 << (signal.SIGINT - 1)) and blocked & (1 << (signal.SIGTERM - 1)), hex(blocked)
        # A worker the nanny starts again after a crash is started the same way.
        victim = next(iter(pids.values()))
        os.kill(victim, signal.SIGKILL)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            now = client.run(os.getpid, on_error="ignore")  # the killed one may still be listed
            if len(now) == 2 and victim not in now.values():
                break
            time.sleep(0.5)
        new = set(now.values()) - set(pids.values())
        assert len(new) == 1, now
        with open(f"/proc/{new.pop()}/status") as f:
            blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
        assert blocked & (1 << (signal.SIGINT - 1)) and blocked & (1 << (signal.SIGTERM - 1))
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def _stops_itself_after_returning(i: int, *, marker: str) -> dict:
    """A task whose worker hangs (SIGSTOP) right after it returned block 1, once: the result is stuck on it."""
    if i == 1 and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(1.0)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGSTOP)).start()
    return {"block": i, "pid": os.getpid()}


@pytest.mark.slow
def test_result_held_by_a_hung_worker_is_fetched_after_a_restart(tmp_path):
    """A block finished, then its worker hung before the driver fetched the result: the driver does not wait
    forever; the worker is restarted and the block runs again."""
    cfg = PredictConfig(out=tmp_path / "o.zarr", workers=2, progress=False)
    marker = tmp_path / "stopped"
    rescued = []

    def rescue():  # without a fix the fetch waits forever: wake the worker so that the test fails instead
        if marker.exists() and alive(int(marker.read_text())):
            os.kill(int(marker.read_text()), signal.SIGCONT)
            rescued.append(True)

    watchdog = threading.Timer(120, rescue)
    watchdog.start()
    try:
        with engine.make_client(cfg) as client:
            got = []
            with pytest.warns(UserWarning, match=r"the worker holding the result of block 1 .* does not answer "
                                                 r"within 5 s: restarting it"):
                for res in engine._run_tasks(client, _stops_itself_after_returning, [0, 1, 2, 3], progress=False,
                                             desc="test", timeout=5, marker=str(marker)):
                    if not got:
                        time.sleep(3)  # the driver is busy: block 1 finishes and its worker hangs meanwhile
                    got.append(res)
    finally:
        watchdog.cancel()
    assert not rescued, "the driver waited for the hung worker"
    stopped = int(marker.read_text())
    assert sorted(r["block"] for r in got) == [0, 1, 2, 3]
    assert [r["pid"] for r in got if r["block"] == 1] != [stopped]  # computed again elsewhere
    assert not alive(stopped)


# -- real runs, as a user starts them ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_is_one_line_and_resume_is_identical(inputs, tmp_path, sig):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM (as kill and SLURM send it,
    here to every process too): exit 130 / 143, one line with the ledger state, no worker left running,
    no worker traceback, no leaked semaphores, the store's lock released; --resume completes bit for bit."""
    xyz, model, ref = inputs
    out = tmp_path / "o.zarr"
    p = start(predict_cmd(xyz, model, out))
    wait_for_blocks(out, 3, p)
    workers = workers_of(p.pid)
    assert workers, "no worker processes found"
    os.killpg(p.pid, sig)
    _, err = finish(p)
    done = len(store.read_ledger(out))
    assert p.returncode == 128 + sig, err
    assert 3 <= done < N_BLOCKS, "the run finished before the signal"
    assert errors(err) == [f"bigdens predict: interrupted ({sig.name}): {done} of {N_BLOCKS} blocks are done; "
                           "rerun with --resume to finish"], err
    assert not [pid for pid in workers if alive(pid)]
    assert not storelock.lock_path(out).exists()  # released on the way out, not left for the next run to judge
    assert store.read_attrs(out)["complete"] is False
    resume_and_compare(xyz, model, out, ref)


@pytest.mark.slow
def test_stopped_worker_is_restarted_and_its_block_runs_again(inputs, tmp_path):
    """SIGSTOP one worker mid-run: past --block-timeout its block runs again on a restarted worker."""
    xyz, model, ref = inputs
    out = tmp_path / "o.zarr"
    p = start(predict_cmd(xyz, model, out, "--block-timeout", "20"))
    wait_for_blocks(out, 3, p)
    stopped = workers_of(p.pid)[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        stdout, err = finish(p)
    finally:
        if alive(stopped):
            os.kill(stopped, signal.SIGKILL)
    assert p.returncode == 0, err
    assert f"complete: {N_BLOCKS}/{N_BLOCKS} blocks" in stdout
    # Stopped while computing a block (the block timeout) or while holding a finished one (the fetch timeout):
    # either way its worker is restarted and the block runs again.
    assert re.search(r"bigdens predict: warning: (no result within 20 s: restarting the worker of block \d+|"
                     r"the worker holding the result of block \d+ \(\S+\) does not answer within 20 s: "
                     r"restarting it; the block runs again)", err), err
    assert errors(err) == [], err
    assert not alive(stopped)  # killed by its nanny, not left stopped
    compare(out, ref)


@pytest.mark.slow
def test_workers_killed_again_and_again_stop_the_run_with_one_line(inputs, tmp_path):
    """Every worker is killed as it starts computing (an out-of-memory killer, a bad node): after Dask's allowed
    failures the run stops with one line naming the block, the ledger state and --resume; --resume completes."""
    xyz, model, ref = inputs
    out = tmp_path / "o.zarr"
    p = start(predict_cmd(xyz, model, out))
    wait_for_blocks(out, 2, p)
    killed, computing_since = [], {}

    def kill_computing_workers():
        # A worker computing a block loads torch: stopped at once, it makes no progress however busy the
        # machine; killed 0.3 s later (a kill right at a worker's start could beat its nanny's bookkeeping).
        while p.poll() is None:
            for pid in workers_of(p.pid):
                try:
                    if pid not in computing_since:
                        with open(f"/proc/{pid}/maps") as f:
                            if "libtorch_cpu" not in f.read():
                                continue
                        os.kill(pid, signal.SIGSTOP)
                        computing_since[pid] = time.monotonic()
                    elif time.monotonic() - computing_since[pid] > 0.3:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        del computing_since[pid]
                except OSError:  # ended meanwhile
                    computing_since.pop(pid, None)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_computing_workers, daemon=True)
    killer.start()
    try:
        _, err = finish(p)
    finally:
        killer.join()
        for pid in computing_since:  # stopped, not yet killed: none is left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    done = len(store.read_ledger(out))
    assert p.returncode == 2, err
    assert len(killed) >= 4
    lines = errors(err)
    assert len(lines) == 1, err
    assert re.fullmatch(r"bigdens predict: error: block \d+ failed: the worker computing it died 4 times "
                        r"\(the last one tcp://127\.0\.0\.1:\d+: killed, or out of memory\?\); "
                        rf"{done} of {N_BLOCKS} blocks are done; rerun with --resume to finish", lines[0]), lines[0]
    assert done < N_BLOCKS
    resume_and_compare(xyz, model, out, ref)


@pytest.mark.slow
def test_lost_scheduler_is_one_line_and_resume_is_identical(inputs, tmp_path):
    """A run on a cluster of its own (--scheduler-file) whose scheduler is killed part way: one line, exit 2."""
    xyz, model, ref = inputs
    out, sched_file = tmp_path / "o.zarr", tmp_path / "scheduler.json"
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    scheduler = subprocess.Popen([dask, "scheduler", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                  "--port", "0", "--dashboard-address", ":0"], **quiet)
    workers = None
    try:
        end = time.monotonic() + WAIT_S
        while not sched_file.exists() and time.monotonic() < end:
            time.sleep(0.2)
        workers = subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--nworkers", "2",
                                    "--nthreads", "1"], **quiet)
        p = start(predict_cmd(xyz, model, out, cluster=("--scheduler-file", str(sched_file))))
        wait_for_blocks(out, 3, p)
        os.kill(scheduler.pid, signal.SIGKILL)
        _, err = finish(p)
    finally:
        for proc in (scheduler, workers):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    done = len(store.read_ledger(out))
    assert p.returncode == 2, err
    lines = errors(err)
    assert len(lines) == 1, err
    m = re.fullmatch(r"bigdens predict: error: block \d+ failed: (the Dask scheduler dropped it \(.+: did the "
                     r"scheduler stop\?\)|lost the connection to the Dask scheduler \(.+\)); "
                     rf"(\d+) of {N_BLOCKS} blocks are done; rerun with --resume to finish", lines[0])
    assert m, lines[0]
    # Workers this run did not start finish the blocks they hold after it stopped: the count is a lower bound.
    assert 3 <= int(m.group(2)) <= done < N_BLOCKS, (lines[0], done)
    resume_and_compare(xyz, model, out, ref)


# -- under the real SLURM -------------------------------------------------------------------------

def _job_state(job_id: str) -> str | None:
    r = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    m = re.search(r"JobState=(\w+)", r.stdout)
    return m.group(1) if m else None


@pytest.mark.slow
@pytest.mark.slurm
def test_scancel_of_a_batch_job_is_one_line_and_resume_is_identical(inputs, tmp_path, local_slurm):
    """`bigdens predict` as a SLURM batch job, sent SIGTERM by scancel part way (as preemption and the
    time limit do): the job's output holds the one interrupted line; --resume completes bit for bit."""
    xyz, model, ref = inputs
    out = tmp_path / "o.zarr"
    script = tmp_path / "job.sh"
    cmd = " ".join(predict_cmd(xyz, model, out))
    # exec: the run is the batch step's main process, so SLURM waits for it to shut down.
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=bigdens-faults\n#SBATCH --output={tmp_path}/job.out\n"
                      f"#SBATCH --cpus-per-task=1\n#SBATCH --mem=3G\n#SBATCH --time=00:20:00\n"
                      f"export PYTHONUNBUFFERED=1\nexec {cmd}\n")
    r = subprocess.run(["sbatch", "--parsable", "--chdir", str(tmp_path), str(script)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    try:
        wait_for_blocks(out, 3)
        # The signal scancel sends on cancellation, to the batch step (the run) and every process in it.
        subprocess.run(["scancel", "--signal=TERM", "--full", job], check=True, timeout=60)
        end = time.monotonic() + WAIT_S
        while _job_state(job) in ("PENDING", "RUNNING", "COMPLETING") and time.monotonic() < end:
            time.sleep(0.5)
        assert _job_state(job) not in ("PENDING", "RUNNING", "COMPLETING"), "the job did not end"
    finally:
        subprocess.run(["scancel", job], timeout=60)
    text = (tmp_path / "job.out").read_text()
    done = len(store.read_ledger(out))
    assert 3 <= done < N_BLOCKS, "the job finished before the signal"
    # SLURM's own notice of the signal ("slurmstepd-NODE: error: *** JOB 7 ON NODE CANCELLED AT ... ***") aside.
    ours = [line for line in errors(text) if not re.match(r"slurmstepd\S*: error: \*\*\* JOB \d+ ON ", line)]
    assert ours == [f"bigdens predict: interrupted (SIGTERM): {done} of {N_BLOCKS} blocks are done; "
                    "rerun with --resume to finish"], text
    assert not storelock.lock_path(out).exists()
    resume_and_compare(xyz, model, out, ref)
