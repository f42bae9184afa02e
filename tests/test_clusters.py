"""Cluster profiles: validation before anything is submitted, and the job script they make."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from bigdens import clusters
from bigdens.errors import SetupError

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
    ],
)
def test_bad_profiles_fail_before_submission(tmp_path, edit, message):
    with pytest.raises(SetupError, match=message) as info:
        clusters.load_profile(write(tmp_path, GOOD.replace(*edit)))
    assert "p.yaml" in str(info.value) or "unknown cluster profile" in str(info.value)


def test_unknown_profile_and_missing_sbatch(tmp_path, monkeypatch):
    with pytest.raises(SetupError, match="unknown cluster profile 'nope'.*local-slurm"):
        clusters.load_profile("nope")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="no 'sbatch' on PATH"):
        clusters.require_slurm()


@pytest.mark.skipif(shutil.which("sinfo") is None, reason="needs SLURM's sinfo")
def test_job_larger_than_any_node_refused(tmp_path):
    prof = clusters.load_profile(write(tmp_path, GOOD.replace("cores: 2", "cores: 4096").replace("threads_per_worker: 2", "threads_per_worker: 1")))
    with pytest.raises(SetupError, match="largest node has"):
        clusters.check_node_fits(prof)
