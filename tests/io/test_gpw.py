"""GPAW .gpw reader (needs GPAW)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bigdens.data import load
from bigdens.errors import InputError


@pytest.mark.gpaw
def test_read_gpw(tmp_path):
    pytest.importorskip("gpaw", reason="GPAW (the dft extra) is not installed")
    from bigdens.io.gpw import read_gpw

    script = (
        "from gpaw import GPAW, PW, FermiDirac; from bigdens.structure import fcc_al; import numpy as np; "
        "a = fcc_al(1); a.calc = GPAW(mode=PW(300), setups='hgh', kpts=(1, 1, 1), gpts=(12, 12, 12), "
        "occupations=FermiDirac(0.1), txt=None); a.get_potential_energy(); "
        f"a.calc.write({str(tmp_path / 'al.gpw')!r}); np.save({str(tmp_path / 'rho.npy')!r}, a.calc.get_pseudo_density())"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    f = read_gpw(tmp_path / "al.gpw")
    np.testing.assert_allclose(f.density, np.load(tmp_path / "rho.npy"), rtol=1e-10)
    assert f.provenance["protocol"].startswith("import-gpw-") and f.provenance["code"] == "GPAW"
    (snap,) = load([tmp_path / "al.gpw"], split="validation")
    assert snap.split == "validation" and abs(snap.electron_integral - 12) < 1e-6
    (tmp_path / "bad.gpw").write_text("not a gpw file")
    with pytest.raises(InputError, match="GPAW cannot read"):
        read_gpw(tmp_path / "bad.gpw")
