"""Optimisation settings of training and fine-tuning: :class:`TrainConfig` (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

#: Learning-rate schedules of :class:`TrainConfig` (``schedule``).
SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    epochs
        Maximum number of epochs.
    points_per_epoch
        Grid points drawn (without replacement within an epoch) per epoch.
    batch_size
        Points per optimiser step.
    lr
        Adam learning rate of the trained layers.
    patience
        Stop after this many epochs without a better validation NMAE.
    seed
        Seeds weight initialisation, point sampling and the training noise.
    train_layers
        Fine-tuning: number of final layers trained (None: all).
    frozen_lr_scale
        Fine-tuning: learning-rate factor of the other layers (0: frozen).
    nll_beta
        β of the β-NLL loss (0: the plain Gaussian NLL; 0.5 fits the mean
        harder where the data are hard, e.g. alloys).
    device
        Where the optimisation runs: ``"cpu"``, ``"cuda"`` or ``"auto"``
        (CUDA when torch sees it).  The descriptors are computed on the CPU
        either way, and the model returned lives on the CPU.  On the CPU
        the same seed and thread count give the same model bit for bit;
        on a GPU that is not checked.  CPU and GPU differ by float32
        rounding, which training amplifies.
    time_limit
        Wall-clock seconds after which no new epoch starts (default
        :data:`DEFAULT_TIME_LIMIT`, a day; None: no limit); the best epoch so
        far is kept, as on early stopping.  For jobs with a wall-time limit
        (SLURM).  An interrupt (Ctrl-C, SIGTERM) after the first epoch also
        ends training with the best epoch so far.
    schedule
        How the learning rate moves, one of :data:`SCHEDULES`: ``"plateau"``
        halves it when the validation NMAE has not improved for
        ``max(2, patience // 3)`` epochs; ``"cosine"`` lowers it from ``lr``
        to ``lr · min_lr_factor`` along half a cosine over ``epochs`` (by
        epoch, not by clock: set ``epochs`` to what ``time_limit`` allows, or
        the run stops before the rate is low).
    min_lr_factor
        ``"cosine"``: the final learning rate as a share of ``lr``.
    """

    epochs: int = 150
    points_per_epoch: int = 300_000
    batch_size: int = 2048
    lr: float = 2e-3
    patience: int = 25
    seed: int = 0
    train_layers: int | None = None
    frozen_lr_scale: float = 0.0
    nll_beta: float = 0.0
    device: str = "cpu"
    time_limit: float | None = 86400.0
    schedule: str = "plateau"
    min_lr_factor: float = 0.01

    def __post_init__(self):
        from ..config import DEVICES

        if self.device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("epochs", "points_per_epoch", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr!r}")
        if self.train_layers is not None and int(self.train_layers) < 1:
            raise InputError(f"train_layers must be >= 1 (or None for all), got {self.train_layers!r}")
        if not 0 <= self.frozen_lr_scale <= 1:
            raise InputError(f"frozen_lr_scale must be within [0, 1], got {self.frozen_lr_scale!r}")
        if not 0 <= self.nll_beta <= 1:
            raise InputError(f"nll_beta must be within [0, 1], got {self.nll_beta!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InputError(f"time_limit must be > 0 seconds (or None), got {self.time_limit!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 < self.min_lr_factor <= 1:
            raise InputError(f"min_lr_factor must be within (0, 1], got {self.min_lr_factor!r}")
