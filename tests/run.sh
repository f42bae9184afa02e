#!/usr/bin/env bash
# Install bigdens with its test, DFT and MALA-benchmark extras into .venv and run the test suite.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch==2.13.0: the CPU wheel on this machine's disk (the range in pyproject admits it).
# CC=g++: GPAW's C sources are C++ (see README, "DFT data").  mala: the MALA comparison
# benchmark's smoke test runs MALA and LAMMPS for real.
CC=g++ .venv/bin/pip install --quiet torch==2.13.0 -e '.[test,dft,mala]'
# The SLURM tests need the single-node SLURM: install (root, apt) and start it where we can.
# With CI=true they must run, so a failure to start it fails the run; elsewhere they skip.
# Several runs on one machine share it: each holds a lease (a file named by its PID) while its tests
# run, and the last run out stops SLURM only if one of the runs started it (flock serialises both).
slurm=${BIGDENS_SLURM_SCRIPT:-cluster_configs/local-slurm/slurm.sh}
leases=${BIGDENS_SLURM_LEASES:-/tmp/bigdens-slurm-leases}
mkdir -p "$leases"
prune() { for f in "$leases"/[0-9]*; do [[ -e $f ]] && ! kill -0 "${f##*/}" 2>/dev/null && rm -f "$f"; done; true; }
release() {
    (
        flock 9
        rm -f "$leases/$$"
        prune
        if ! compgen -G "$leases/[0-9]*" >/dev/null && [[ -e $leases/started ]]; then
            bash "$slurm" stop 9>&- || true
            rm -f "$leases/started"
        fi
    ) 9>"$leases/lock"
}
(
    flock 9
    prune
    touch "$leases/$$"
    if ! bash "$slurm" status 2>/dev/null; then
        if [[ $(id -u) == 0 ]] && { command -v apt-get >/dev/null || command -v slurmctld >/dev/null; }; then
            # 9>&-: the daemons must not inherit the lock's descriptor (they would hold the lock for good).
            if bash "$slurm" start 9>&-; then touch "$leases/started"; elif [[ ${CI:-} == true ]]; then exit 1; fi
        elif [[ ${CI:-} == true ]]; then
            echo "tests/run.sh: CI needs the local SLURM but this is not root with apt-get" >&2
            exit 1
        fi
    fi
) 9>"$leases/lock" || { release; exit 1; }
trap release EXIT
# The pw.x tests (QE starting densities) need Quantum ESPRESSO: Debian's package, where we can install it.
if ! command -v pw.x >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    { apt-get install -y -q quantum-espresso >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
      apt-get install -y -q quantum-espresso >/dev/null 2>&1; }; } || [[ ${CI:-} != true ]]
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
# Leave the machine as we found it (release, on exit: the last run out stops what a run started).
exit $status
