#!/bin/bash
# The issue-30 GPAW benchmark set, one GPAW process at a time, resumable (each output keeps its finished rows;
# a cell with its Harris-Foulkes row is skipped). Run from the repository root: bash benchmarks/dft_start_queue.sh
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
R=benchmarks/results/dft_start
run() { out=$R/$1.json; shift; if [ -f $out ] && grep -q '"harris-foulkes"\|"done": true' $out && ! grep -q '"partial"' $out; then echo "skip $out"; return; fi
  echo "== $(date -u +%T) $out"; nice -n 5 .venv/bin/python -m benchmarks.dft_start --out $out "$@" || echo "FAILED $out"; }
run al32-vac1-T0300 --structure datasets/al32-vacancy/al32-vac1-T0300-00.npz
run al32-vac1-T0600 --structure datasets/al32-vacancy/al32-vac1-T0600-00.npz
run al32-T0900-09 --structure datasets/al32/al32-T0900-09.npz
run al32-divacancy-T0900 --structure $R/al32-divacancy-T0900.xyz
run sige64-x0.50-T0900-01 --structure datasets/sige64/sige64-x0.50-T0900-01.npz --harris-samples 2
run al108-vac1-T0300 --structure datasets/al108-vacancy/al108-vac1-T0300-00.npz --harris-samples 2
run sige64-x0.25-T0900-00 --structure datasets/sige64/sige64-x0.25-T0900-00.npz --harris-samples 2
echo "== $(date -u +%T) queue done"
