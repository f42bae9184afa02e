#!/usr/bin/env bash
# Install bigdens with its test and DFT extras into .venv and run the test suite.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch==2.13.0: the CPU wheel on this machine's disk (the range in pyproject admits it).
# CC=g++: GPAW's C sources are C++ (see README, "DFT data").
CC=g++ .venv/bin/pip install --quiet torch==2.13.0 -e '.[test,dft]'
exec .venv/bin/python -m pytest "$@"
