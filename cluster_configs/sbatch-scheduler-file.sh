#!/usr/bin/env bash
# Run bigdens inside one SLURM allocation that you request yourself: a Dask
# scheduler and one worker per task, joined by `bigdens predict --scheduler-file`.
# Use this where a site prefers one big job to many small ones (the
# --cluster slurm:NAME way), or where compute nodes cannot reach the login node.
#
#   sbatch cluster_configs/sbatch-scheduler-file.sh                       # edit the #SBATCH lines first
#   sbatch --export=ALL,STRUCTURE=big.xyz,OUT=big.zarr cluster_configs/sbatch-scheduler-file.sh
#
# Submit from an environment where `bigdens` and `dask` are on PATH (activate
# the venv first: sbatch passes your environment to the job).
#SBATCH --job-name=bigdens
#SBATCH --nodes=1
#SBATCH --ntasks=2                # Dask workers: one per task
#SBATCH --cpus-per-task=1         # numba and torch threads of each worker
#SBATCH --time=01:00:00
#SBATCH --output=bigdens-%j.out
set -euo pipefail

STRUCTURE=${STRUCTURE:-structure.xyz}     # any file ASE reads
OUT=${OUT:-density.zarr}
PREDICT_ARGS=${PREDICT_ARGS:-}            # e.g. "--spacing 0.2 --mc-samples 20 --resume"
INTERFACE=${INTERFACE:-}                  # e.g. ib0 for InfiniBand; empty: Dask's default
THREADS=${SLURM_CPUS_PER_TASK:-1}

SCHEDULER_FILE=${SCHEDULER_FILE:-$PWD/dask-scheduler-$SLURM_JOB_ID.json}
iface=${INTERFACE:+--interface $INTERFACE}
export NUMBA_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# The scheduler runs beside this script on the first node; it takes no CPU of its own.
dask scheduler --scheduler-file "$SCHEDULER_FILE" --dashboard-address :0 $iface &
scheduler=$!
trap 'kill $scheduler $workers 2>/dev/null || true; rm -f "$SCHEDULER_FILE"' EXIT
for _ in $(seq 120); do [[ -s $SCHEDULER_FILE ]] && break; sleep 1; done

# One single-threaded Dask worker per task; each gives its CPUs to numba and torch.
srun --ntasks="$SLURM_NTASKS" --cpus-per-task="$THREADS" --overlap \
    dask worker --scheduler-file "$SCHEDULER_FILE" --nthreads 1 --nworkers 1 $iface \
    --local-directory "${TMPDIR:-/tmp}" &
workers=$!

# Rerunning the job with --resume in PREDICT_ARGS continues an interrupted store.
bigdens predict "$STRUCTURE" --scheduler-file "$SCHEDULER_FILE" --threads-per-worker "$THREADS" \
    --out "$OUT" $PREDICT_ARGS
