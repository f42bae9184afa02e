#!/bin/bash
# Regenerate / resume the shipped DFT data sets (protocol bigdens-dft-v1; streams 4 and 5: v2).
# Every command is resumable: rerunning it computes only the snapshots its
# dataset.json does not list yet (plan.json fixes the configurations).
#
#   datasets/generate.sh 1   # stream 1: al32, al32-vacancy, al108, sige64-vacancy, sige216, sige216-900k
#   datasets/generate.sh 2   # stream 2: sige64
#   datasets/generate.sh 3   # stream 3: al108-cal600, al108-cal900 (two processes)
#
# Run both side by side in the background, e.g.
#   nohup setsid datasets/generate.sh 1 > /tmp/bigdens_runs/stream1.log 2>&1 < /dev/null &
#   nohup setsid datasets/generate.sh 2 > /tmp/bigdens_runs/stream2.log 2>&1 < /dev/null &
# Each stream is one serial GPAW process at nice 19.
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOGS=${BIGDENS_GPAW_LOGS:-/tmp/bigdens_runs/gpaw-logs}
mkdir -p "$LOGS"
case "${1:-}" in
1)
  nice -n 19 $PY -m bigdens datagen --protocol v1 al --cells 2 2 2 --temperatures 300 600 900 1400 --melt-above 1400 \
    --snapshots-per-temperature 10 --seed 1 -o datasets/al32 --log-dir $LOGS \
    --description "FCC Al 2x2x2 (32 atoms), EMT Langevin MD; 1400 K melted at 2500 K first (liquid; at 1200 K the EMT liquid recrystallizes in this cell)"
  nice -n 19 $PY -m bigdens datagen --protocol v1 al --cells 2 2 2 --vacancies 1 --temperatures 300 400 500 600 \
    --snapshots-per-temperature 1 --all-test --seed 2 -o datasets/al32-vacancy --log-dir $LOGS \
    --description "FCC Al 2x2x2 with one vacancy (31 atoms), EMT Langevin MD; all test"
  nice -n 19 $PY -m bigdens datagen --protocol v1 al --cells 3 3 3 --temperatures 300 600 900 \
    --snapshots-per-temperature 2 --split-fractions 0.5 0 0.5 --seed 3 -o datasets/al108 --log-dir $LOGS \
    --description "FCC Al 3x3x3 (108 atoms), EMT Langevin MD; for transfer learning (train) and held-out test"
  # Active-learning hold-out (never in the pool of benchmarks/active_learning.py): ~2,500 core-s each.
  nice -n 19 $PY -m bigdens datagen --protocol v1 al --cells 3 3 3 --vacancies 1 --temperatures 300 900 \
    --snapshots-per-temperature 1 --all-test --seed 7 -o datasets/al108-vacancy --log-dir $LOGS \
    --description "FCC Al 3x3x3 with one vacancy (107 atoms), EMT Langevin MD; all test (active-learning hold-out)"
  nice -n 19 $PY -m bigdens datagen --protocol v1 sige --x 0.5 --cells 2 2 2 --vacancies 1 --temperatures 300 600 900 \
    --snapshots-per-temperature 1 --all-test --seed 5 -o datasets/sige64-vacancy --log-dir $LOGS \
    --description "diamond Si0.5Ge0.5 2x2x2 with one vacancy (63 atoms), Tersoff Langevin MD; all test"
  # Gamma-only 216-atom cells, serial (GPAW's MPI here splits k-points only): 3,984 core-s for the
  # first (20 SCF iterations, ~3.3 min each on a quiet core); about 1.1 core-hours each.
  nice -n 19 $PY -m bigdens datagen --protocol v1 sige --x 0.25 0.5 --cells 3 3 3 --temperatures 300 900 \
    --snapshots-per-temperature 1 --split-fractions 0.5 0 0.5 --seed 6 -o datasets/sige216 --log-dir $LOGS \
    --description "diamond Si(1-x)Ge(x) 3x3x3 (216 atoms), Tersoff Langevin MD; for transfer learning (train) and held-out test"
  # A 900 K 216-atom training cell, added when the Si-Ge stage 2 trained on the two 300 K cells
  # above did not carry over to the 900 K test cells; x = 0.75, a composition the others lack.
  nice -n 19 $PY -m bigdens datagen --protocol v1 sige --x 0.75 --cells 3 3 3 --temperatures 900 \
    --snapshots-per-temperature 1 --split-fractions 1 0 0 --seed 7 -o datasets/sige216-900k --log-dir $LOGS \
    --description "diamond Si0.25Ge0.75 3x3x3 (216 atoms) at 900 K, Tersoff Langevin MD; a stage-2 training cell"
  ;;
2)
  nice -n 19 $PY -m bigdens datagen --protocol v1 sige --x 0 0.25 0.5 0.75 1 --cells 2 2 2 --temperatures 300 600 900 \
    --snapshots-per-temperature 2 --seed 4 -o datasets/sige64 --log-dir $LOGS \
    --description "diamond Si(1-x)Ge(x) 2x2x2 (64 atoms), Tersoff (PRB 39, 5566) Langevin MD"
  ;;
3)
  # Calibration cells for the temperature dependence of the Al model's sigma (model v2: the 108-atom
  # calibration split had only a 300 K cell, and 1 sigma covered 57 / 50 % at 600 / 900 K).
  # Two serial GPAW processes side by side, ~3,900 core-s each.
  for T in 600 900; do
    # (FCC Al 3x3x3 from a file, so that the snapshot names, al108cal-T..., differ from al108's)
    nice -n 19 $PY -m bigdens datagen --protocol v1 datasets/structures/al108cal.xyz --temperatures $T --snapshots-per-temperature 1 \
      --split-fractions 0 1 0 --seed $((8 + T / 300)) -o datasets/al108-cal$T --log-dir $LOGS \
      --description "FCC Al 3x3x3 (108 atoms) at $T K, EMT Langevin MD; calibration split (never trained on)" &
  done
  wait
  ;;
4)
  # A fresh test split under protocol v2 that no design decision has seen (accuracy v3, item 4):
  # new MD seeds, every snapshot in the test split; scored only after the models were chosen.
  # (FCC Al 2x2x2 from a file, so that the snapshot names, al32fresh-..., differ from al32's)
  nice -n 19 $PY -m bigdens datagen --protocol v2 datasets/structures/al32fresh.xyz --temperatures 300 600 900 1400 --melt-above 1400 \
    --snapshots-per-temperature 1 --all-test --seed 11 -o datasets/al32-v2-fresh --log-dir $LOGS \
    --description "FCC Al 2x2x2 (32 atoms), EMT Langevin MD, 1400 K from a melt; protocol v2; a test split no decision has seen"
  nice -n 19 $PY -m bigdens datagen --protocol v2 datasets/structures/al32fresh.xyz --vacancies 1 --temperatures 900 \
    --snapshots-per-temperature 1 --all-test --seed 12 -o datasets/al32-vacancy-v2-fresh --log-dir $LOGS \
    --description "FCC Al 2x2x2 with one vacancy (31 atoms) at 900 K, EMT Langevin MD; protocol v2; a test split no decision has seen"
  ;;
5)
  # Its Si-Ge counterpart: a composition no training cell has (x = 0.35), 900 K; ~3,200 core-s.
  nice -n 19 $PY -m bigdens datagen --protocol v2 sige --x 0.35 --cells 2 2 2 --temperatures 900 \
    --snapshots-per-temperature 1 --all-test --seed 13 -o datasets/sige64-v2-fresh --log-dir $LOGS \
    --description "diamond Si0.65Ge0.35 2x2x2 (64 atoms) at 900 K, Tersoff Langevin MD; protocol v2; a test split no decision has seen"
  ;;
*)
  echo "usage: $0 1|2|3|4|5   (stream 1: al32, al32-vacancy, al108, sige64-vacancy, sige216, sige216-900k; stream 2: sige64; stream 3: al108-cal600/900; 4, 5: fresh v2 test cells of Al, Si-Ge)" >&2
  exit 2
  ;;
esac
