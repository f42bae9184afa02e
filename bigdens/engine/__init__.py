"""The inference engine: a structure in, a Zarr store of density and σ out.

Data flow (DESIGN §8)::

    structure → grid → chunk-aligned blocks → per block, one task:
        halo atoms → numba descriptors → BNN with S samples seeded by (seed, block)
        → write its region of every variable and its per-atom sums (Voronoi cells,
          per sample: bigdens.charges) → record the block in the ledger
    → on completion: per-atom ``charge`` and ``charge_std`` from the blocks' sums

A run is plan → execute → finish, one module per stage:

- :mod:`~bigdens.engine.plan`: :func:`plan_run` decides the run (frames, model,
  grid, blocks, identity, expected electrons) before anything is written.
- :mod:`~bigdens.engine.runner`: :func:`run` and :func:`predict`: the output's
  lock, the store, the tasks, and the finish (electrons, domain checks,
  ``--renormalize``, charges, the result in the store's attributes).
- :mod:`~bigdens.engine.worker`: what a worker process runs
  (:func:`predict_block`, :func:`scale_block`) and its per-process caches.
- :mod:`~bigdens.engine.cluster`: the Dask cluster (:func:`make_client`) and the
  loop that runs the tasks, restarting stuck workers (:func:`block_timeout`).
- :mod:`~bigdens.engine.summary`: :class:`RunStats` and :class:`RunSummary`.
"""

from __future__ import annotations

# The names other modules, tests and benchmarks use, from the modules that define them.
from ..bnn import resolve_device
from ..config import PredictConfig  # noqa: F401
from .cluster import (  # noqa: F401
    BLOCK_ATTEMPTS, BLOCK_TIMEOUT_FACTOR, BLOCK_TIMEOUT_FLOOR_S, BLOCK_TIMEOUT_SETUP_S, RESTART_TIMEOUT_S,
    RESULT_TIMEOUT_S, SCHEDULER_FILE_WAIT_S, STUCK_POLL_S, BlockFailed, _run_tasks, block_timeout, make_client,
)
from .plan import COMPOSITION_TOLERANCE, RunPlan, _warn_composition, plan_domain, plan_run, run_grid  # noqa: F401
from .runner import out_of_domain_message, predict, run  # noqa: F401
from .summary import RunStats, RunSummary
from .worker import load_model, peak_rss_mb, predict_block, scale_block  # noqa: F401

__all__ = ["RunPlan", "RunStats", "RunSummary", "load_model", "make_client", "plan_run", "predict", "predict_block",
           "resolve_device", "run", "run_grid", "scale_block"]
