"""The inference engine (being split into modules; see runner)."""

from .runner import *  # noqa: F401,F403
from .runner import (  # noqa: F401
    BLOCK_ATTEMPTS, BLOCK_TIMEOUT_FACTOR, BLOCK_TIMEOUT_FLOOR_S, BLOCK_TIMEOUT_SETUP_S, PredictConfig,
    _run_tasks, _warn_composition, block_timeout, out_of_domain_message, peak_rss_mb, run_grid,
)
