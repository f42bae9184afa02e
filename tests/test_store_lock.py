"""One writer per store: the store lock against real second processes, stale locks, and the per-write run-id check."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from ase.io import write

from bigdens import engine, store, storelock, structure
from bigdens.errors import RunError, SetupError

from helpers import BLOCK, SPACING, assert_identical, config, make_model, variables  # noqa: E402

#: Many samples make a block slow enough to stop a run part way.
SLOW_SAMPLES = 2000


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """Structure file, model, CLI arguments of a slow run, and its finished store computed in this process."""
    tmp = tmp_path_factory.mktemp("reference")
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)
    atoms.wrap()
    write(tmp / "al.xyz", atoms)
    model = make_model(tmp / "m.safetensors")
    # The reference reads the same file (extxyz rounds positions).
    engine.run(structure.read(tmp / "al.xyz"), config(tmp / "ref.zarr", model, mc_samples=SLOW_SAMPLES))
    return tmp / "al.xyz", model, variables(tmp / "ref.zarr")


def predict_args(xyz, model, out, *extra):
    return ["predict", str(xyz), "--model", str(model), "--spacing", str(SPACING), "--block", str(BLOCK),
            "--out", str(out), "--mc-samples", str(SLOW_SAMPLES), "--seed", "3", "--workers", "0",
            "--allow-out-of-domain", *extra]


def bigdens(*args):
    return subprocess.run([sys.executable, "-m", "bigdens", *args], capture_output=True, text=True, timeout=300)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "bigdens", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_blocks(p, out, n):
    """Wait until the run ``p`` has recorded at least ``n`` blocks; return the count."""
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None and len(store.read_ledger(out)) < n:
        time.sleep(0.01)
    return len(store.read_ledger(out))


def one_error_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert lines[0].startswith("bigdens predict: error: ") and "Traceback" not in r.stderr
    return lines[0]


def snapshot(out):
    """Every file of a store with its bytes: to show that nothing changed."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def write_lock(out, **fields):
    """A lock file as a run on this host writes it, with ``fields`` changed."""
    lock = {"command": "bigdens predict", "host": socket.gethostname(), "pid": 1, "pid_start": None,
            "boot_id": storelock._boot_id(), "run_id": "0" * 32, "since": "2025-01-01T00:00:00+00:00",
            "store": str(out), "token": "t" * 32, **fields}
    storelock.lock_path(out).write_text(json.dumps(lock))
    return lock


def state(pid):
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


def proc_start(pid):
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- a second run while the first writes ---------------------------------------------------------

@pytest.mark.slow
def test_second_run_is_refused_while_the_first_writes(slow_run, tmp_path):
    xyz, model, ref = slow_run
    out = tmp_path / "o.zarr"
    first = start(*predict_args(xyz, model, out))
    try:
        assert 1 <= wait_for_blocks(first, out, 1) < 27, "the first run finished before it could be stopped"
        os.kill(first.pid, signal.SIGSTOP)  # frozen mid-run, holding the lock
        held = storelock.holder(out)
        run_id = store.read_attrs(out)["run_id"]
        assert (held.pid, held.host, held.run_id) == (first.pid, socket.gethostname(), run_id)
        before = snapshot(out)
        for extra in ((), ("--overwrite",), ("--resume",)):
            line = one_error_line(bigdens(*predict_args(xyz, model, out, *extra)))
            assert f"{str(out)!r} is in use by bigdens predict (pid {first.pid} on host {socket.gethostname()}, " \
                   f"run {run_id}, since " in line, line
            assert f"stop it (kill {first.pid}); a lock left by a run that died is removed automatically" in line
            assert snapshot(out) == before  # nothing touched
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
        first.wait()
    assert not storelock.lock_path(out).exists()
    assert store.read_attrs(out)["complete"] is True and store.verify(out).ok
    assert_identical(variables(out), ref)  # the first run's result, intact


@pytest.mark.slow
def test_two_fresh_runs_at_once_one_writes_the_other_is_told_why(slow_run, tmp_path):
    xyz, model, ref = slow_run
    out = tmp_path / "o.zarr"
    runs = [start(*predict_args(xyz, model, out)) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in runs]
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 2], errors
    loser = [e for p, e in zip(runs, errors) if p.returncode == 2][0]
    lines = [ln for ln in loser.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in loser, loser
    # Refused by the lock while the other runs, or by the finished store after it (the one the other run made).
    assert "is in use by bigdens predict (pid " in lines[0] or "already holds a bigdens store" in lines[0], loser
    assert not storelock.lock_path(out).exists() and store.verify(out).ok
    assert_identical(variables(out), ref)


# -- stale locks -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_run_leaves_a_stale_lock_that_resume_takes_over(slow_run, tmp_path):
    xyz, model, ref = slow_run
    out = tmp_path / "o.zarr"
    first = start(*predict_args(xyz, model, out))
    done = wait_for_blocks(first, out, 3)
    os.kill(first.pid, signal.SIGKILL)
    try:
        assert 3 <= done < 27, "the run finished before it could be killed"
        # Not reaped yet: the dead run is a zombie, which still answers `kill -0`.
        deadline = time.time() + 60
        while state(first.pid) != "Z" and time.time() < deadline:
            time.sleep(0.01)
        assert state(first.pid) == "Z"
        assert storelock.holder(out).pid == first.pid  # SIGKILL cannot release it
        r = bigdens(*predict_args(xyz, model, out, "--resume"))
    finally:
        first.wait()
    assert r.returncode == 0, r.stderr
    lock = str(storelock.lock_path(out))
    assert f"took over the stale lock {lock!r} of bigdens predict (pid {first.pid} " in r.stderr
    assert "computed now" in r.stdout and "complete: 27/27" in r.stdout
    assert not storelock.lock_path(out).exists() and store.verify(out).ok
    assert_identical(variables(out), ref)  # bit for bit the uninterrupted run


@pytest.mark.parametrize("how", ["dead pid", "reused pid", "other boot"])
def test_stale_lock_is_taken_over_with_a_note(tmp_path, model, atoms, how, caplog):
    out = tmp_path / "o.zarr"
    if how == "dead pid":
        lock = write_lock(out, pid=dead_pid())
    elif how == "reused pid":  # the pid runs (this test), but a process started at another time wrote the lock
        lock = write_lock(out, pid=os.getpid(), pid_start=proc_start(os.getpid()) - 1)
    else:
        lock = write_lock(out, pid=os.getpid(), pid_start=proc_start(os.getpid()), boot_id="another-boot")
    with caplog.at_level(logging.WARNING, logger="bigdens.storelock"):
        s = engine.run(atoms, config(out, model))
    assert s.complete and store.verify(out).ok
    notes = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(notes) == 1 and f"pid {lock['pid']} on host {lock['host']}" in notes[0], notes
    assert not storelock.lock_path(out).exists()


@pytest.mark.parametrize("how", ["live process", "other host", "unreadable"])
def test_live_or_unknown_lock_refuses_before_anything_is_touched(tmp_path, model, atoms, how):
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=2))
    before = snapshot(out)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        if how == "live process":
            write_lock(out, pid=sleeper.pid, pid_start=proc_start(sleeper.pid))
            want = (f"is in use by bigdens predict (pid {sleeper.pid} on host {socket.gethostname()}, run {'0' * 32}, "
                    f"since 2025-01-01T00:00:00+00:00); wait for it to finish or stop it (kill {sleeper.pid})")
        elif how == "other host":
            write_lock(out, host="node-elsewhere", pid=sleeper.pid)
            want = (f"is in use by bigdens predict (pid {sleeper.pid} on host node-elsewhere, run {'0' * 32}, since "
                    "2025-01-01T00:00:00+00:00); wait for it to finish or stop it on node-elsewhere; a lock from "
                    f"another host is not judged stale: if that run is gone, delete "
                    f"{str(storelock.lock_path(out))!r}")
        else:
            storelock.lock_path(out).write_text("{not json")
            want = f"is locked by {str(storelock.lock_path(out))!r}, which cannot be read (not a bigdens lock)"
        lock_text = storelock.lock_path(out).read_text()
        for flags in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(SetupError) as info:
                engine.run(atoms, config(out, model, **flags))
            assert want in str(info.value) and "\n" not in str(info.value)
            assert snapshot(out) == before and storelock.lock_path(out).read_text() == lock_text
        # verify (which marks a damaged store incomplete, and --repair) waits for the writer too.
        for extra in ([], ["--repair"]):
            r = subprocess.run([sys.executable, "-m", "bigdens", "verify", str(out), *extra], capture_output=True,
                               text=True)
            assert r.returncode == 2 and r.stderr.startswith("bigdens verify: error: ") and want in r.stderr
            assert snapshot(out) == before
    finally:
        sleeper.kill()
        sleeper.wait()


# -- every exit path releases the lock -----------------------------------------------------------

def test_lock_is_released_after_success_and_error(tmp_path, model, atoms, monkeypatch):
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=1))
    assert not storelock.lock_path(out).exists()

    def fail(*args, **kwargs):
        assert storelock.holder(out).pid == os.getpid()  # held while blocks are written
        raise RunError("disk on fire")

    monkeypatch.setattr(store, "write_ledger", fail)
    with pytest.raises(RunError, match="disk on fire"):
        engine.run(atoms, config(out, model, resume=True))
    assert not storelock.lock_path(out).exists()
    monkeypatch.undo()
    assert engine.run(atoms, config(out, model, resume=True)).complete


@pytest.mark.slow
def test_ctrl_c_releases_the_lock(slow_run, tmp_path):
    xyz, model, ref = slow_run
    out = tmp_path / "o.zarr"
    p = start(*predict_args(xyz, model, out))
    done = wait_for_blocks(p, out, 1)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert 1 <= done < 27, "the run finished before it could be interrupted"
    assert p.returncode == 130 and "bigdens predict: interrupted" in err, err
    assert not storelock.lock_path(out).exists()
    r = bigdens(*predict_args(xyz, model, out, "--resume"))
    assert r.returncode == 0 and "stale lock" not in r.stderr, r.stderr
    assert_identical(variables(out), ref)


# -- the run id, checked at every write --------------------------------------------------------

def replace_run_id(out):
    """What an ``--overwrite`` by another run does to the store's identity (from another process)."""
    code = "import sys; from bigdens import store; store.update_attrs(sys.argv[1], run_id='f' * 32)"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=120)


@pytest.mark.parametrize("when", ["after a ledger entry", "after a block's data"])
def test_replaced_store_gets_no_block_of_the_old_run(tmp_path, model, atoms, monkeypatch, when):
    out = tmp_path / "o.zarr"
    write_ledger, write_block = store.write_ledger, store.write_block
    seen = []

    def ledger_then_replace(path, index, entry):
        write_ledger(path, index, entry)
        seen.append(index)
        if when == "after a ledger entry" and len(seen) == 3:
            replace_run_id(out)

    def block_then_replace(arrays, block, values, *, path, frame=None):
        sums = write_block(arrays, block, values, path=path, frame=frame)
        if when == "after a block's data" and len(seen) == 3:
            replace_run_id(out)
        return sums

    monkeypatch.setattr(store, "write_ledger", ledger_then_replace)
    monkeypatch.setattr(store, "write_block", block_then_replace)
    with pytest.raises(RunError, match=r"was replaced by another run while run [0-9a-f]{32} was writing it "
                                       r"\(now run f{32}\); this run stopped before (writing|recording) block"):
        engine.run(atoms, config(out, model))
    ledger = store.read_ledger(out)
    assert sorted(ledger) == seen and len(seen) == 3  # not the block whose data landed before the swap
    rho = variables(out)["density"]
    written = np.zeros(rho.shape, dtype=bool)
    for b in store.blocks_of(store.read_attrs(out)):
        if b.index in ledger or (when == "after a block's data" and b.index == 3):
            written[b.slices] = True
    assert np.isnan(rho[~written]).all()  # after the swap, nothing more of the old run landed
    assert store.read_attrs(out)["run_id"] == "f" * 32 and store.read_attrs(out)["complete"] is False
    assert not storelock.lock_path(out).exists()


def test_replaced_store_is_not_renormalized_by_the_old_run(tmp_path, model, atoms, monkeypatch):
    raw = tmp_path / "raw.zarr"
    engine.run(atoms, config(raw, model))
    out = tmp_path / "o.zarr"
    write_ledger = store.write_ledger

    def replace_at_first_pending(path, index, entry):
        write_ledger(path, index, entry)
        if entry.pending is not None:
            replace_run_id(out)

    monkeypatch.setattr(store, "write_ledger", replace_at_first_pending)
    with pytest.raises(RunError, match=r"replaced by another run .* stopped before writing block"):
        engine.run(atoms, config(out, model, renormalize=True))
    assert_identical(variables(out), variables(raw))  # no block scaled after the swap
    assert not any(e.scale != 1.0 for e in store.read_ledger(out).values())


def test_a_link_to_a_store_shares_the_store_s_lock(tmp_path):
    # Two writers must not get in by two names: the lock is keyed by the resolved path.
    real = tmp_path / "real.zarr"
    real.mkdir()
    (tmp_path / "link.zarr").symlink_to(real)
    (tmp_path / "dir-link").symlink_to(tmp_path)
    assert storelock.lock_path(tmp_path / "link.zarr") == storelock.lock_path(real)
    assert storelock.lock_path(tmp_path / "dir-link" / "link.zarr") == storelock.lock_path(real)
    with storelock.hold(tmp_path / "link.zarr", run_id="a"):
        with pytest.raises(SetupError, match="is in use by bigdens predict"):
            with storelock.hold(real, run_id="b"):
                pass
    assert storelock.holder(real) is None  # released under the name it was taken by
