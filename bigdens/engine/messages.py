"""What crosses the driver/worker boundary: the run settings every task gets (:class:`Job`) and what a
task sends back (:class:`TaskReport`).  The ledger entry it records is :class:`bigdens.store.LedgerEntry`.

Both are frozen and hold plain values only, so Dask pickles them small; ``to_json``/``from_json`` give
their flat JSON form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..store import LedgerEntry, WorkUnits

#: The stages a task times (``t_<stage>`` in its JSON form), s.
STAGES = ("setup", "descriptors", "charges", "bnn", "write")


@dataclass(frozen=True)
class Job:
    """The run settings every task gets (:func:`~bigdens.engine.worker.predict_block`).

    Paths are absolute; ``disorder`` is the bond spread (Å) the network gets: one value, or for a
    trajectory a tuple of one per frame (None where undefined).
    """

    store: str
    run_id: str
    model: str
    model_hash: str
    samples: int
    seed: int
    device: str
    batch: int
    threads: int
    disorder: float | tuple | None
    #: Frames of a trajectory store (None: a single structure) and blocks per frame.
    n_frames: int | None
    n_blocks: int

    def __post_init__(self):
        if isinstance(self.disorder, list):
            object.__setattr__(self, "disorder", tuple(self.disorder))

    @property
    def units(self) -> WorkUnits:
        """The run's work units."""
        return WorkUnits(self.n_blocks, self.n_frames)

    def disorder_of(self, frame: int | None) -> float | None:
        """The bond spread (Å) the network gets for ``frame``: per frame for a trajectory, else the structure's."""
        return self.disorder[frame] if frame is not None and isinstance(self.disorder, tuple) else self.disorder

    def to_json(self) -> dict:
        out = asdict(self)
        if isinstance(self.disorder, tuple):
            out["disorder"] = list(self.disorder)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Job":
        return cls(**data)


@dataclass(frozen=True)
class TaskReport:
    """What one :func:`~bigdens.engine.worker.predict_block` task sends back to the driver.

    Times s, memory MB.
    """

    #: The ledger entry the task recorded.
    entry: LedgerEntry
    #: Time of each stage (:data:`STAGES`): ``setup`` (imports, atoms, cell list and model, once per
    #: process), ``descriptors``, ``charges`` (the Voronoi assignment), ``bnn`` (the network, with the
    #: per-atom sums of the samples), ``write`` (the variables, the charges file and the ledger entry).
    stage_s: dict = field(default_factory=dict)
    #: Grid points computed, halo atoms, atom rows read from the store's tiles for the block.
    n_points: int = 0
    n_halo: int = 0
    n_read: int = 0
    pid: int = 0
    max_rss_mb: float = 0.0
    #: The SLURM job the worker runs in, or None.
    slurm_job_id: str | None = None

    @property
    def block(self) -> int:
        return self.entry.block

    @property
    def total_s(self) -> float:
        """The task's own time, summed over its stages."""
        return sum(self.stage_s.get(stage, 0.0) for stage in STAGES)

    def to_json(self) -> dict:
        """The flat form: the ledger entry's fields, ``t_<stage>`` and the rest."""
        return {**self.entry.to_json(), **{f"t_{s}": self.stage_s[s] for s in STAGES if s in self.stage_s},
                "n_points": self.n_points, "n_halo": self.n_halo, "n_read": self.n_read, "pid": self.pid,
                "max_rss_mb": self.max_rss_mb, "slurm_job_id": self.slurm_job_id}

    @classmethod
    def from_json(cls, data: dict) -> "TaskReport":
        rest = ("n_points", "n_halo", "n_read", "pid", "max_rss_mb", "slurm_job_id")
        entry = {k: v for k, v in data.items() if k not in rest and not k.startswith("t_")}
        return cls(entry=LedgerEntry.from_json(entry),
                   stage_s={s: data[f"t_{s}"] for s in STAGES if f"t_{s}" in data},
                   **{k: data[k] for k in rest if k in data})
