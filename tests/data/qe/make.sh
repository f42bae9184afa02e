#!/bin/sh
# Regenerate the Quantum ESPRESSO files read by tests/test_qe_import.py.
#
# Two pw.x SCF runs of a 2-atom Si cell (fcc primitive cell, ibrav=2, a = 5.43 Å; LDA,
# norm-conserving Si.pz-vbc.UPF, ecutwfc 12 Ry, 4x4x4 shifted k-mesh; FFT grid 20x20x20;
# 8 valence electrons):
#   si            the diamond structure (atoms at crystal (0,0,0) and (1/4,1/4,1/4))
#   si_displaced  the second atom moved to (0.27, 0.25, 0.22), so that the density has no
#                 symmetry that swaps the grid axes (a transposed or shifted grid shows)
# and for each, pp.x with plot_num=0 (the valence charge density), iflag=3 (3-D, whole cell):
#   PREFIX.rho.xsf.gz   output_format=5: XSF DATAGRID_3D, Å, e/bohr³, end points repeated
#   PREFIX.rho.cube.gz  output_format=6: Gaussian cube, bohr, e/bohr³
#   PREFIX.scf.out, PREFIX.pp_xsf.out, PREFIX.pp_cube.out: the logs (QE version, electrons, grid)
#
# Needs pw.x and pp.x (Debian/Ubuntu: apt-get install quantum-espresso; made with 6.7) and
# Si.pz-vbc.UPF, which that package ships in /usr/share/espresso/pseudo (set PSEUDO_DIR to use
# another folder).  Usage: sh tests/data/qe/make.sh (writes next to this script; one core, seconds).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pseudo=${PSEUDO_DIR:-/usr/share/espresso/pseudo}
test -f "$pseudo/Si.pz-vbc.UPF" || { echo "make.sh: no $pseudo/Si.pz-vbc.UPF (set PSEUDO_DIR)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1
for p in si si_displaced; do
  sed "s|PSEUDO_DIR|$pseudo|" "$here/$p.scf.in" > $p.scf.in
  pw.x -in $p.scf.in > $p.scf.out
  pp.x -in "$here/$p.pp_xsf.in" > $p.pp_xsf.out
  pp.x -in "$here/$p.pp_cube.in" > $p.pp_cube.out
  # The logs name the temporary and pseudopotential folders; drop them so that reruns differ only in dates.
  for f in $p.scf.out $p.pp_xsf.out $p.pp_cube.out; do
    sed "s|$work|.|g; s|$pseudo|PSEUDO_DIR|g" "$f" > "$here/$f"
  done
  for f in $p.rho.xsf $p.rho.cube; do
    gzip -n -9 -c "$f" > "$here/$f.gz"
  done
  grep -m1 "Program PWSCF" "$here/$p.scf.out"
  grep -m1 "number of electrons" "$here/$p.scf.out"
done
ls -l "$here"/*.gz
