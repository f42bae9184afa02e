"""Generate DFT density data sets: thermalize, take snapshots, run GPAW.

The pipeline is

1. **structures** — one or more starting structures ("variants", e.g. one
   Si(1−x)Ge(x) alloy per x), from the builders of :mod:`bigdens.structure`
   or from a file;
2. **thermalization** — per variant and temperature, one seeded Langevin MD
   trajectory (ASE's :class:`~ase.md.langevin.Langevin`, Maxwell-Boltzmann
   initial velocities) with a classical potential (ASE's EMT for Al, the
   Si–Ge Tersoff potential of J. Tersoff, PRB 39, 5566 (1989) through
   matscipy for Si/Ge); after ``equilibration_ps`` the configuration is taken
   every ``interval_ps``.  Temperatures at or above ``melt_above_K`` start
   from a melt (``melt_ps`` at ``melt_temperature_K``) so that they are
   liquid;
3. **plan** — the snapshots, their splits and the generation order are
   written to ``plan.json`` in the output directory before any DFT runs;
4. **DFT** — one GPAW single point per snapshot with the settings of a
   protocol (:data:`PROTOCOLS`: ``bigdens-dft-v1``, the library default, or
   ``bigdens-dft-v2``, recommended for new data) or of a custom
   :class:`DFTSettings`, each snapshot written atomically into the data set
   (:mod:`bigdens.data`).

The run is resumable: rerunning the same command on the same directory
reuses ``plan.json`` and computes only the snapshots that the manifest does
not list yet.  A lock file (``.datagen.lock``) keeps two runs from writing the
same directory.

Modules, in the order of the pipeline (every public name is re-exported here,
as :mod:`ase.build` does, so ``from bigdens.datagen import generate`` works):

- :mod:`~bigdens.datagen.settings` — :class:`DFTSettings`, the protocol registry (:data:`PROTOCOLS`,
  :func:`protocol_settings`) and :class:`MDSettings`;
- :mod:`~bigdens.datagen.variants` — the starting structures (:func:`build_variants`);
- :mod:`~bigdens.datagen.potentials` — EMT and the Si–Ge Tersoff potential;
- :mod:`~bigdens.datagen.md` — the Langevin thermalization (:func:`thermalize`);
- :mod:`~bigdens.datagen.plan` — snapshots, splits and ``plan.json`` (:func:`make_plan`);
- :mod:`~bigdens.datagen.dft` — the GPAW single point (:func:`dft_density`) and its grid convention;
- :mod:`~bigdens.datagen.pipeline` — the resumable, locked run (:func:`generate`).

Progress lines go to the loggers ``bigdens.datagen.md``, ``.plan`` and
``.pipeline`` at INFO; they propagate to ``bigdens.datagen``, which
``bigdens datagen`` shows.
"""

import logging

from .dft import compute_snapshot, dft_density
from .md import check_temperatures, thermalize
from .pipeline import LOCK_FILE, check_requirements, generate, recorded_protocol
from .plan import PLAN_FILE, PLAN_VERSION, PlannedSnapshot, assign_splits, load_plan, make_plan, read_plan, save_plan
from .potentials import Tersoff_PRB_39_5566_Si_Ge, classical_calculator, potential_name
from .relabel import planned_from, relabel
from .settings import (DEFAULT_PROTOCOL, PROTOCOL, PROTOCOL_ALIASES, PROTOCOL_V2, PROTOCOLS, RECOMMENDED_PROTOCOL,
                       DFTSettings, MDSettings, known_protocols, protocol_name, protocol_settings)
from .variants import build_variants

#: The parent of the submodules' progress loggers (``bigdens.datagen.md`` ...): ``bigdens datagen`` shows its lines.
logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROTOCOL", "LOCK_FILE", "PLAN_FILE", "PLAN_VERSION", "PROTOCOL", "PROTOCOLS", "PROTOCOL_ALIASES",
    "PROTOCOL_V2", "RECOMMENDED_PROTOCOL", "DFTSettings", "MDSettings", "PlannedSnapshot",
    "Tersoff_PRB_39_5566_Si_Ge", "assign_splits", "build_variants", "check_requirements", "check_temperatures",
    "classical_calculator", "compute_snapshot", "dft_density", "generate", "known_protocols", "load_plan",
    "make_plan", "potential_name", "protocol_name", "protocol_settings", "read_plan", "recorded_protocol",
    "save_plan", "thermalize", "planned_from", "relabel",
]
