"""SLURM cluster profiles: YAML files read by ``--cluster slurm:NAME``.

A profile has two sections.  ``jobqueue`` holds dask-jobqueue
``SLURMCluster`` settings (cores, processes, memory, walltime, queue,
account, interface, job directives, prologue, local directory, worker
arguments such as ``--lifetime`` for walltime limits); ``bigdens`` holds
bigdens' own (jobs to start, threads per worker for numba and torch, block
size, how long to wait for workers).  NAME is a shipped profile (a file of
the repository's ``cluster_configs/``, without ``.yaml``), one in the folder
``$BIGDENS_CLUSTER_CONFIGS``, or a path.  Every key is checked before anything
is submitted: a typo is one error naming the key and the file.

The shipped profiles are package data, ``bigdens/cluster_configs``, found with
:mod:`importlib.resources`: in the repository that folder is a symlink to the
top-level ``cluster_configs/`` (the one copy), and building a wheel copies the
files it points to, so a plain ``pip install`` has them too.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import RunError, SetupError

#: Package-data folder of the shipped profiles, inside the ``bigdens`` package.
SHIPPED_FOLDER = "cluster_configs"

#: jobqueue keys accepted, with the type each must have.
JOBQUEUE_KEYS: dict[str, type | tuple] = {
    "cores": int,
    "processes": int,
    "memory": str,
    "walltime": str,
    "queue": (str, type(None)),
    "account": (str, type(None)),
    "interface": (str, type(None)),
    "job_extra_directives": list,
    "job_script_prologue": list,
    "job_directives_skip": list,
    "local_directory": (str, type(None)),
    "log_directory": (str, type(None)),
    "worker_extra_args": list,
    "death_timeout": (int, float, type(None)),
    "job_cpu": (int, type(None)),
    "job_mem": (str, type(None)),
    "name": str,
    "shebang": str,
    "python": (str, type(None)),
    "scheduler_options": dict,
}
#: bigdens keys accepted: name -> (type, default).
BIGDENS_KEYS: dict[str, tuple] = {
    "jobs": (int, 1),
    "threads_per_worker": (int, 1),
    "block": (int, None),
    "wait_for_workers_s": ((int, float), 300),
    "max_cores_per_job": ((int, type(None)), None),
    "security": ((dict, type(None)), None),
}
#: jobqueue keys whose value is a list of strings.
_STRING_LISTS = ("job_extra_directives", "job_script_prologue", "job_directives_skip", "worker_extra_args")
#: Names a SLURM user may write for a jobqueue key, -> the key.
_SLURM_NAMES = {"partition": "queue", "time": "walltime", "mem": "memory", "cpus_per_task": "cores",
                "lifetime": "worker_extra_args: ['--lifetime', '50m']", "prologue": "job_script_prologue"}
# A size as dask and SLURM write it: 16GB, 16G, 500MiB, 1.5 TB (a bare number is ambiguous: refused).
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|[KMGT]i?B?)\s*$", re.IGNORECASE)
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")


@dataclass(frozen=True)
class Profile:
    """A validated cluster profile.

    Attributes
    ----------
    name : str
    path : Path
    jobqueue : dict
        Keyword arguments of ``dask_jobqueue.SLURMCluster``.
    jobs : int
        SLURM jobs to start (each with ``processes`` workers).
    threads_per_worker : int
        numba and torch threads of each worker.
    block : int or None
        Block edge (grid points) to use with this cluster, if set.
    wait_for_workers_s : float
        How long to wait for the first worker before giving up, s.
    max_cores_per_job : int or None
        The site's limit on ``jobqueue.cores``, checked when the profile is read.
    security : dict or None
        Dask TLS settings (``distributed.security.Security`` keywords).
    """

    name: str
    path: Path
    jobqueue: dict
    jobs: int = 1
    threads_per_worker: int = 1
    block: int | None = None
    wait_for_workers_s: float = 300
    max_cores_per_job: int | None = None
    security: dict | None = field(default=None)


def shipped_profile_dir() -> Path | None:
    """The folder of the shipped profiles (package data ``bigdens/cluster_configs``), or None.

    Found with :func:`importlib.resources.files`, so it is the installed
    package's copy after ``pip install`` and the repository's top-level
    ``cluster_configs/`` (through the symlink, resolved) in a checkout or an
    editable install.  None where the package has no such folder on disk.
    """
    from importlib.resources import files

    folder = files(__package__).joinpath(SHIPPED_FOLDER)
    if not isinstance(folder, Path) or not folder.is_dir():
        return None  # not installed as files (e.g. imported from a zip archive), or no profiles shipped
    return folder.resolve()


def profile_dirs() -> list[Path]:
    """Folders searched for profiles by name, in order: ``$BIGDENS_CLUSTER_CONFIGS``, then the shipped one."""
    extra = os.environ.get("BIGDENS_CLUSTER_CONFIGS")
    shipped = shipped_profile_dir()
    return ([Path(extra)] if extra else []) + ([shipped] if shipped is not None else [])


def list_profiles() -> dict[str, Path]:
    """Profiles found in the profile folders, name -> path."""
    out: dict[str, Path] = {}
    for d in profile_dirs():
        for p in sorted(d.glob("*.yaml")):
            out.setdefault(p.stem, p)
    return out


def _resolve(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or os.sep in name:
        if p.is_file():
            return p
        raise SetupError(f"cluster profile file {name!r} does not exist")
    found = list_profiles()
    if name not in found:
        raise SetupError(f"unknown cluster profile {name!r}; available: {sorted(found) or 'none'} "
                         "(a profile is cluster_configs/NAME.yaml, or give a path to a .yaml file)")
    return found[name]


def _check_type(value, want, key: str, path: Path):
    if isinstance(value, bool) and want is not bool:
        ok = False
    else:
        ok = isinstance(value, want)
    if not ok:
        names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
        raise SetupError(f"{path}: key {key!r} must be {names}, got {value!r}")


def _mapping(raw: dict, key: str, path: Path) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SetupError(f"{path}: {key!r} must be a mapping of keys to values (key: value lines indented "
                         f"under '{key}:'), got {value!r}")
    return dict(value)


def _check_names(given: dict, allowed, what: str, path: Path) -> None:
    unknown = sorted(set(given) - set(allowed), key=str)
    if unknown:
        raise SetupError(f"{path}: unknown {what} key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _check_nested(jq: dict, security: dict | None, path: Path) -> None:
    # scheduler_options and security are passed to distributed as keywords: a typo would
    # fail only when the scheduler starts, with a traceback.
    import inspect

    if jq.get("scheduler_options"):
        from distributed import Scheduler

        params = inspect.signature(Scheduler.__init__).parameters
        _check_names(jq["scheduler_options"], [n for n, p in params.items() if n != "self" and p.kind
                                               is not p.VAR_KEYWORD], "jobqueue.scheduler_options", path)
    if security:
        from distributed.security import Security

        _check_names(security, Security.__slots__, "bigdens.security", path)


def load_profile(name: str) -> Profile:
    """Read and validate a profile (a name in cluster_configs/ or a path).

    Raises
    ------
    SetupError
        Unknown profile, YAML that does not parse, unknown or mistyped keys,
        memory or walltime in a wrong format, cores above the allowed maximum.
    """
    import yaml

    path = _resolve(name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SetupError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SetupError(f"{path}: a profile is a mapping with the sections 'jobqueue' and 'bigdens'")
    unknown = set(raw) - {"scheduler", "jobqueue", "bigdens", "description"}
    if unknown:
        raise SetupError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: scheduler, jobqueue, bigdens, description")
    if raw.get("scheduler", "slurm") != "slurm":
        raise SetupError(f"{path}: scheduler must be 'slurm', got {raw.get('scheduler')!r}")
    jq = _mapping(raw, "jobqueue", path)
    for key, value in jq.items():
        if key not in JOBQUEUE_KEYS:
            hint = f" (SLURM's {key!r} is {_SLURM_NAMES[key]} here)" if key in _SLURM_NAMES else ""
            raise SetupError(f"{path}: unknown jobqueue key {key!r}{hint}; allowed: {', '.join(sorted(JOBQUEUE_KEYS))}")
        _check_type(value, JOBQUEUE_KEYS[key], f"jobqueue.{key}", path)
        if key in _STRING_LISTS and not all(isinstance(v, str) for v in value):
            raise SetupError(f"{path}: jobqueue.{key} must be a list of strings, got {value!r}; quote each "
                             "item, e.g. [\"--exclusive\"]")
    for key in ("cores", "memory", "walltime"):
        if key not in jq:
            raise SetupError(f"{path}: missing required key jobqueue.{key} (e.g. cores: 8, memory: 16GB, walltime: '01:00:00')")
    if jq["cores"] < 1 or jq.get("processes", 1) < 1 or jq.get("processes", 1) > jq["cores"]:
        raise SetupError(f"{path}: need 1 <= processes <= cores, got cores={jq['cores']}, processes={jq.get('processes', 1)}")
    if not _MEMORY.match(jq["memory"]):
        raise SetupError(f"{path}: jobqueue.memory {jq['memory']!r} is not a size like '16GB' or '500MiB'")
    if not _WALLTIME.match(jq["walltime"]):
        raise SetupError(f"{path}: jobqueue.walltime {jq['walltime']!r} is not HH:MM:SS, MM:SS or D-HH:MM:SS")
    bd = _mapping(raw, "bigdens", path)
    for key, value in bd.items():
        if key not in BIGDENS_KEYS:
            raise SetupError(f"{path}: unknown bigdens key {key!r}; allowed: {', '.join(sorted(BIGDENS_KEYS))}")
        _check_type(value, BIGDENS_KEYS[key][0], f"bigdens.{key}", path)
    settings = {k: bd.get(k, default) for k, (_, default) in BIGDENS_KEYS.items()}
    for key in ("jobs", "threads_per_worker", "block", "max_cores_per_job"):
        if settings[key] is not None and settings[key] < 1:
            raise SetupError(f"{path}: bigdens.{key} must be >= 1, got {settings[key]!r}")
    if not (math.isfinite(settings["wait_for_workers_s"]) and settings["wait_for_workers_s"] > 0):
        raise SetupError(f"{path}: bigdens.wait_for_workers_s must be a positive number of seconds, got "
                         f"{settings['wait_for_workers_s']!r}; e.g. wait_for_workers_s: 300")
    per_process = jq["cores"] // jq.get("processes", 1)
    if settings["threads_per_worker"] > per_process:
        raise SetupError(f"{path}: bigdens.threads_per_worker={settings['threads_per_worker']} exceeds the "
                         f"{per_process} core(s) each worker process gets (cores / processes)")
    if settings["max_cores_per_job"] is not None and jq["cores"] > settings["max_cores_per_job"]:
        raise SetupError(f"{path}: jobqueue.cores={jq['cores']} is more than this cluster allows per job "
                         f"(bigdens.max_cores_per_job={settings['max_cores_per_job']})")
    _check_nested(jq, settings["security"], path)
    return Profile(name=path.stem, path=path, jobqueue=jq, **settings)


def check_node_fits(profile: Profile) -> None:
    """Refuse a job larger than every node of the cluster (asks ``sinfo``).

    Raises
    ------
    SetupError
        No ``sbatch`` on PATH, a SLURM controller that does not answer, or
        ``jobqueue.cores`` above the CPUs of the largest node.
    """
    require_slurm()
    if shutil.which("sinfo") is None:
        return  # a submit host without sinfo: let SLURM judge
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise SetupError("the SLURM controller did not answer `sinfo` within 30 s; try again later") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SetupError(f"SLURM does not answer on this machine (sinfo: {why}); is slurmctld running? "
                         "(a local test cluster: bash cluster_configs/local-slurm/slurm.sh start)")
    cpus = [int(v.rstrip("+")) for v in proc.stdout.split() if v.rstrip("+").isdigit()]
    if cpus and profile.jobqueue["cores"] > max(cpus):
        raise SetupError(f"{profile.path}: jobqueue.cores={profile.jobqueue['cores']} but the largest node has "
                         f"{max(cpus)} CPUs: no job could ever start; lower cores")


def require_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise SetupError("no 'sbatch' on PATH: this machine is not a SLURM submit host "
                         "(run on a login node, or use --cluster local)")


def cluster_kwargs(profile: Profile) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for the profile."""
    import sys

    kw = dict(profile.jobqueue)
    kw.setdefault("python", sys.executable)
    kw.setdefault("processes", 1)
    env = [f"export NUMBA_NUM_THREADS={profile.threads_per_worker}",
           f"export OMP_NUM_THREADS={profile.threads_per_worker}"]
    kw["job_script_prologue"] = list(kw.get("job_script_prologue", [])) + env
    # Each worker process runs one block at a time and gives its cores to numba and
    # torch: SLURM reserves `cores` CPUs (job_cpu) while Dask sees one thread per process.
    kw.setdefault("job_cpu", kw["cores"])
    kw["cores"] = kw["processes"]
    if "name" in kw:  # the SLURM job name (-J); SLURMCluster's own `name` only names the cluster object
        kw["job_name"] = kw.pop("name")
    if profile.security:
        from distributed.security import Security

        kw["security"] = Security(**profile.security)
        kw["protocol"] = "tls://"
    return kw


def _jobqueue():
    """The ``dask_jobqueue.slurm`` module, imported without losing Ctrl-C.

    Importing dask_jobqueue (its ``runner`` module) replaces the SIGINT handler
    with ``sys.exit()``, which would turn Ctrl-C into a silent exit with status
    0; the previous handler is put back.
    """
    import signal

    before = signal.getsignal(signal.SIGINT)
    import dask_jobqueue.slurm

    if threading.current_thread() is threading.main_thread() and before is not None:
        signal.signal(signal.SIGINT, before)
    return dask_jobqueue.slurm


def make_cluster(profile: Profile):
    """Start a ``SLURMCluster`` (its scheduler here, no jobs yet) for the profile.

    Raises
    ------
    SetupError
        No ``sbatch`` on PATH, or the scheduler cannot start here (e.g. an
        ``interface`` this machine does not have).
    """
    SLURMCluster = _jobqueue().SLURMCluster
    require_slurm()
    try:
        return SLURMCluster(**cluster_kwargs(profile))
    except (RuntimeError, ValueError, OSError) as exc:
        raise SetupError(f"{profile.path}: cannot start the Dask scheduler on this machine ({exc}); fix "
                         "jobqueue.interface or jobqueue.scheduler_options (interface, host). Nothing was "
                         "submitted") from None


def job_script(profile: Profile) -> str:
    """The batch script a job of this profile would submit (nothing is started or submitted).

    The scheduler address is a placeholder: the real one is known once the
    scheduler runs, so the profile's interfaces need not exist on this machine.
    """
    kw = cluster_kwargs(profile)
    kw.pop("scheduler_options", None)
    address = f"{kw.get('protocol') or 'tcp://'}<scheduler-address>:8786"
    return _jobqueue().SLURMJob(address, name="dummy-name", **kw).job_script()


def check_submission(profile: Profile, script: str) -> None:
    """Ask SLURM whether it would accept the job script (``sbatch --test-only``: nothing is queued).

    Raises
    ------
    SetupError
        With sbatch's own reason (unknown partition or account, memory or
        time beyond the partition's limits, ...).
    """
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="bigdens-job-") as f:
        f.write(script)
        f.flush()
        try:
            proc = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise SetupError("SLURM did not answer `sbatch --test-only` within 60 s; try again later") from None
    if proc.returncode != 0:
        why = " ".join(line.removeprefix("sbatch: error: ").strip() for line in proc.stderr.strip().splitlines())
        raise SetupError(f"SLURM would refuse the jobs of profile {profile.name!r} ({why or 'no reason given'}); "
                         f"fix {profile.path} (partition, account, cores, memory, walltime). Nothing was submitted")


def jobs_needed(profile: Profile, n_tasks: int) -> int:
    """SLURM jobs to start for ``n_tasks`` blocks: the profile's ``jobs``, fewer if they would idle."""
    per_job = profile.jobqueue.get("processes", 1)
    return max(1, min(profile.jobs, math.ceil(max(n_tasks, 1) / per_job)))


def _squeue(args: list[str]) -> list[list[str]]:
    # squeue's lines split at "|" (empty when squeue does not answer).
    try:
        out = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout
    except subprocess.TimeoutExpired:
        return []
    return [line.strip().split("|") for line in out.splitlines() if "|" in line]


def job_states(job_ids: list[str]) -> dict[str, str]:
    """``squeue``'s view of each job still known to SLURM, id -> text.

    A pending job also gets its place in its partition's queue (by priority)
    and SLURM's expected start, e.g. ``PENDING (Resources), position 2 of 5
    pending in partition debug, expected start 2025-06-01T10:00:00``.
    """
    if not job_ids or shutil.which("squeue") is None:
        return {}
    queue = None
    states = {}
    rows = [r for r in _squeue(["-j", ",".join(job_ids), "-o", "%i|%T|%r|%P|%S"]) if len(r) == 5]
    for jid, state, reason, partition, start in rows:
        text = f"{state} ({reason})" if reason not in ("", "None") else state
        if state == "PENDING":
            if queue is None:
                queue = [r for r in _squeue(["-t", "PENDING", "-o", "%i|%P", "--sort=-p,i"]) if len(r) == 2]
            ahead = [i for i, part in queue if part == partition]
            if jid in ahead:
                text += f", position {ahead.index(jid) + 1} of {len(ahead)} pending in partition {partition}"
            if start[:1].isdigit():
                text += f", expected start {start}"
        states[jid] = text
    return states


def _job_ids(cluster) -> list[str]:
    return [str(job.job_id) for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]


def _keep_jobs(cluster, n_jobs: int, stop: threading.Event, interval: float) -> None:
    # A worker whose job died (scancel, node failure, walltime) leaves the
    # cluster after distributed's lost-worker timeout; scaling to the same
    # number of jobs then submits a replacement, and the scheduler reruns the
    # lost worker's blocks (the ledger keeps the store exact).
    while not stop.wait(interval):
        try:
            cluster.scale(jobs=n_jobs)
        except Exception:  # the cluster is closing: nothing to keep
            return


@contextmanager
def slurm_client(profile: Profile, n_tasks: int, *, keep_interval: float = 5.0) -> Iterator[object]:
    """Submit SLURM jobs for the profile, yield a Dask ``Client``, cancel every job on exit.

    Starts :func:`jobs_needed` jobs (scaling by jobs, not adaptively), waits
    up to ``bigdens.wait_for_workers_s`` for the first worker, replaces jobs
    that die while the run goes on, and on exit (normal, error or Ctrl-C)
    closes the cluster, which ``scancel``-s its jobs, pending ones included.

    Raises
    ------
    SetupError
        SLURM is not usable here or the job cannot fit a node (before any submission).
    RunError
        No worker arrived in time (the message gives each job's ``squeue`` state).
    """
    from distributed import Client

    check_node_fits(profile)
    n_jobs = jobs_needed(profile, n_tasks)
    cluster = make_cluster(profile)
    stop = threading.Event()
    keeper = None
    client = None
    try:
        check_submission(profile, cluster.job_script())
        client = Client(cluster)
        cluster.scale(jobs=n_jobs)
        _wait_for_first_worker(cluster, client, profile, n_jobs)
        keeper = threading.Thread(target=_keep_jobs, args=(cluster, n_jobs, stop, keep_interval),
                                  name="bigdens-slurm-keeper", daemon=True)
        keeper.start()
        yield client
    finally:
        stop.set()
        if keeper is not None:
            keeper.join()
        if client is not None:
            client.close()
        cluster.close()


def job_output(profile: Profile, job_id: str) -> Path | None:
    """The file holding a job's output (SLURM's default, or the profile's ``log_directory``), if it exists."""
    log_dir = profile.jobqueue.get("log_directory")
    # dask-jobqueue names them JOBNAME-ID.err and .out there; stderr holds the traceback.
    candidates = ([*Path(log_dir).glob(f"*-{job_id}.err"), *Path(log_dir).glob(f"*-{job_id}.out")] if log_dir
                  else [Path.cwd() / f"slurm-{job_id}.out"])
    return next((c for c in candidates if c.is_file()), None)


def _why_job_ended(profile: Profile, job_id: str) -> str:
    # The first exception line of the job's output (the root cause: Python prints it first),
    # else its last line (a shell error from the prologue, say).
    out = job_output(profile, job_id)
    if out is None:
        return f"job {job_id}: no output file found"
    lines = [line.strip() for line in out.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", line)]
    why = (errors or lines or ["(empty)"])[0 if errors else -1]
    return f"job {job_id} ({out}): {why[:300]}"


def _wait_for_first_worker(cluster, client, profile: Profile, n_jobs: int, *, poll_s: float = 5.0) -> None:
    # Poll so that jobs which all died (a bad prologue, interface or python) stop the
    # wait at once instead of after wait_for_workers_s.
    import time

    end = time.monotonic() + profile.wait_for_workers_s
    while (left := end - time.monotonic()) > 0:
        try:
            client.wait_for_workers(1, timeout=min(poll_s, left))
            return
        except TimeoutError:
            pass
        ids = _job_ids(cluster)
        if ids and not job_states(ids) and not client.scheduler_info()["workers"]:
            more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
            raise RunError(f"all {len(ids)} SLURM job(s) of profile {profile.name!r} ended before a Dask worker "
                           f"connected: {_why_job_ended(profile, ids[0])}{more}. Fix {profile.path} "
                           "(job_script_prologue, python, interface) and retry")
    ids = _job_ids(cluster)
    states = job_states(ids)
    if not ids:
        detail = "no job was submitted: run `sbatch` by hand with the script of `bigdens clusters NAME` to see why"
    else:
        detail = "; ".join(f"job {j}: {states.get(j, 'no longer in squeue (ended: see its output file)')}" for j in ids)
    raise RunError(f"no Dask worker connected within {profile.wait_for_workers_s:g} s of submitting {n_jobs} SLURM "
                   f"job(s) with profile {profile.name!r} ({detail}). Wait for the queue and retry, raise "
                   f"bigdens.wait_for_workers_s in {profile.path}, or pick another partition")
