"""Optimisation settings of training and fine-tuning: :class:`TrainConfig` (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


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
        Wall-clock seconds after which no new epoch starts (None: no limit);
        the best epoch so far is kept, as on early stopping.  For jobs with
        a wall-time limit (SLURM).
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
    time_limit: float | None = None

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
