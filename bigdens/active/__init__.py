"""Active learning: spend DFT where the model is unsure (``bigdens suggest`` and ``bigdens learn``).

:mod:`~bigdens.active.candidates` (the pool), :mod:`~bigdens.active.cost` (DFT core-seconds),
:mod:`~bigdens.active.acquisition` (scores and picks), :mod:`~bigdens.active.suggest` (the plan),
:mod:`~bigdens.active.cache` (DFT by structure and protocol) and :mod:`~bigdens.active.loop`
(rounds of suggest → DFT → fine-tune → calibrate → evaluate).
"""

from .acquisition import STRATEGIES, Score, score, select
from .cache import DFTCache
from .candidates import Candidate, from_atoms, from_file, from_generator, load_pool, save_pool, unique
from .cost import CostModel
from .suggest import Request, suggest

__all__ = ["STRATEGIES", "Candidate", "CostModel", "DFTCache", "Request", "Score", "from_atoms", "from_file",
           "from_generator", "load_pool", "save_pool", "score", "select", "suggest", "unique"]
