"""What a run did: :class:`RunStats`, accumulated from the tasks' reports, and :class:`RunSummary`, the result.

:meth:`RunSummary.format` is what ``bigdens predict`` prints; :meth:`RunSummary.to_attrs` is what the run
records in the store's attributes when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..domain import DomainReport
from .messages import STAGES, TaskReport

__all__ = ["STAGES", "RunStats", "RunSummary"]


@dataclass
class RunStats:
    """What the finished tasks of a run report, summed as they come, and the driver's own times.

    Times s, memory MB; each field is the :class:`RunSummary` field of the same name.
    """

    #: Stage times summed over tasks (:data:`STAGES`).
    stage_s: dict = field(default_factory=lambda: {stage: 0.0 for stage in STAGES})
    #: Peak RSS of each worker (pid -> MB), and the same when its first block came back.
    max_rss_mb: dict = field(default_factory=dict)
    first_rss_mb: dict = field(default_factory=dict)
    #: Blocks computed in each SLURM job (job id -> count; None: outside SLURM).
    slurm_jobs: dict = field(default_factory=dict)
    #: Grid points computed.
    points_computed: int = 0
    #: Seconds from the start until the cluster was up, and until the run ended.
    startup_s: float = 0.0
    wall_s: float = 0.0

    def add(self, res: TaskReport) -> None:
        """Count one task's result (:func:`bigdens.engine.predict_block`)."""
        for stage in self.stage_s:
            self.stage_s[stage] += res.stage_s[stage]
        self.max_rss_mb[res.pid] = max(self.max_rss_mb.get(res.pid, 0.0), res.max_rss_mb)
        self.first_rss_mb.setdefault(res.pid, res.max_rss_mb)
        self.points_computed += res.n_points
        self.slurm_jobs[res.slurm_job_id] = self.slurm_jobs.get(res.slurm_job_id, 0) + 1


@dataclass
class RunSummary:
    """What a prediction did (printed by ``bigdens predict``).

    Lengths Å, electrons, times s, densities e/Å³.
    """

    path: Path
    n_atoms: int
    grid_shape: tuple[int, int, int]
    n_blocks: int
    n_computed: int
    n_done: int
    wall_s: float
    points_computed: int
    n_electrons_expected: float | None
    n_electrons_predicted: float | None
    #: The ``--renormalize`` factor (None: not applied); for a trajectory a list, one per frame.
    renormalization_factor: float | list | None
    max_std: float | None
    max_std_index: list | None
    max_std_position: list | None
    complete: bool
    device: str
    #: Epistemic σ (e/Å³) above which a point is unlike the model's validation data
    #: (its 99.9 % quantile there), and how many points of the grid exceed it (None: the
    #: model has no epistemic reference, or blocks are missing).
    epistemic_threshold: float | None = None
    n_epistemic_high: int | None = None
    max_std_epistemic: float | None = None
    max_std_epistemic_index: list | None = None
    max_std_epistemic_position: list | None = None
    stage_s: dict = field(default_factory=dict)
    max_rss_mb: dict = field(default_factory=dict)
    #: Peak RSS of each worker (pid -> MB) when its first block came back: with
    #: ``max_rss_mb`` it shows whether memory grows over a run.
    first_rss_mb: dict = field(default_factory=dict)
    #: Seconds from the start until the cluster was up (workers started; SLURM jobs queued and running).
    startup_s: float = 0.0
    #: Blocks computed in each SLURM job (job id -> count; None: outside SLURM).
    slurm_jobs: dict = field(default_factory=dict)
    #: The domain checks (:mod:`bigdens.domain`): before the run, and after it once complete.
    domain: DomainReport = field(default_factory=DomainReport)
    #: True when ``allow_out_of_domain`` accepted a run outside the domain.
    accepted_out_of_domain: bool = False
    #: The store's ``charges`` attribute once complete (sum of the per-atom charges, largest σ; e), else None.
    charges: dict | None = None
    #: A trajectory's frames (None: one structure), one dict each: ``frame`` (position in the store),
    #: ``index`` (in the input file), ``time``, ``step``, ``bond_spread`` (Å), ``n_electrons_predicted``
    #: and ``charge_sum`` (e; None until complete).  ``n_blocks``/``n_done`` then count (frame, block) units.
    frames: list | None = None
    #: The frame (position in the store) holding ``max_std`` (trajectories only).
    max_std_frame: int | None = None

    @property
    def in_domain(self) -> bool:
        return self.domain.in_domain

    @property
    def n_points(self) -> int:
        """Grid points of the store (every frame's, for a trajectory)."""
        g = self.grid_shape
        return g[0] * g[1] * g[2] * (1 if self.frames is None else len(self.frames))

    @property
    def points_per_s(self) -> float:
        return self.points_computed / max(self.wall_s, 1e-9)

    def _frame_lines(self) -> list[str]:
        # A trajectory: one line per frame with its electrons (at most 20 frames shown, then the range).
        if self.frames is None:
            return []
        exp = "?" if self.n_electrons_expected is None else f"{self.n_electrons_expected:g}"
        out = [f"frames: {len(self.frames)}; electrons expected {exp} per frame"]
        for f in self.frames[:20]:
            when = "".join(f", {k} {f[k]:g}" for k in ("time", "step") if f[k] is not None)
            n = f["n_electrons_predicted"]
            scaled = ("" if self.renormalization_factor is None
                      else f" (renormalized by a factor {self.renormalization_factor[f['frame']]:.6f})")
            out.append(f"  frame {f['frame']} (file frame {f['index']}{when}): electrons predicted "
                       + ("-" if n is None else f"{n:.4f}") + scaled)
        if len(self.frames) > 20:
            got = [f["n_electrons_predicted"] for f in self.frames if f["n_electrons_predicted"] is not None]
            span = f": electrons {min(got):.4f} to {max(got):.4f}" if got else ""
            out.append(f"  ... {len(self.frames) - 20} more frames (all in the store's attributes){span}")
        return out

    def format(self) -> str:
        units = "blocks" if self.frames is None else f"(frame, block) units of {len(self.frames)} frames"
        per = "" if self.frames is None else " per frame"
        g = self.grid_shape
        lines = [
            f"store: {self.path} ({'complete' if self.complete else 'INCOMPLETE'}: "
            f"{self.n_done}/{self.n_blocks} {units}, {self.n_computed} computed now)",
            f"atoms: {self.n_atoms}; grid {g} = {g[0] * g[1] * g[2]:,} points{per}; device {self.device}",
            f"wall time {self.wall_s:.2f} s = {self.points_per_s:,.0f} points/s "
            f"(descriptors {self.stage_s.get('descriptors', 0):.2f} s, network {self.stage_s.get('bnn', 0):.2f} s, "
            f"write {self.stage_s.get('write', 0):.2f} s, worker setup {self.stage_s.get('setup', 0):.2f} s; "
            "summed over tasks)",
        ]
        in_jobs = {k: v for k, v in self.slurm_jobs.items() if k is not None}
        if in_jobs:
            lines.append(f"SLURM: {sum(in_jobs.values())} blocks computed in {len(in_jobs)} job(s) "
                         f"({', '.join(f'{k}: {v}' for k, v in sorted(in_jobs.items()))})")
        if self.n_electrons_predicted is not None:
            exp = "?" if self.n_electrons_expected is None else f"{self.n_electrons_expected:g}"
            line = f"electrons: expected {exp}, predicted {self.n_electrons_predicted:.4f}"
            if self.renormalization_factor is not None:
                line += f" (renormalized by a factor {self.renormalization_factor:.6f})"
            lines.append(line)
        lines += self._frame_lines()
        if self.max_std is not None:
            pos = ", ".join(f"{v:.3f}" for v in self.max_std_position)
            where = "" if self.max_std_frame is None else f" of frame {self.max_std_frame}"
            lines.append(f"max σ {self.max_std:.4g} e/Å³ at grid point {tuple(self.max_std_index)}{where} = "
                         f"({pos}) Å")
        if self.max_std_epistemic is not None:
            pos = ", ".join(f"{v:.3f}" for v in self.max_std_epistemic_position)
            lines.append(f"max epistemic σ {self.max_std_epistemic:.4g} e/Å³ at grid point "
                         f"{tuple(self.max_std_epistemic_index)} = ({pos}) Å")
        if self.n_epistemic_high is not None:
            share = 100.0 * self.n_epistemic_high / self.n_points
            lines.append(f"epistemic σ above the model's validation 99.9 % quantile ({self.epistemic_threshold:.3g} "
                         f"e/Å³) at {self.n_epistemic_high:,} points = {share:.3g} % (about 0.1 % where the structure "
                         "is like the validation data; more marks new environments: density_std_epistemic shows where)")
        if self.charges is not None and self.frames is None:
            lines.append(f"per-atom charges (Voronoi): sum {self.charges['n_electrons']:.4f} e, largest σ "
                         f"{self.charges['max_charge_std']:.3g} e (`bigdens charges {self.path}` lists them)")
        elif self.charges is not None:
            lines.append(f"per-atom charges (Voronoi) of every frame, largest σ "
                         f"{max(v for v in self.charges['max_charge_std'] if v is not None):.3g} e "
                         f"(`bigdens charges {self.path} --frame K` lists them)")
        if not self.domain.in_domain:
            state = "accepted by --allow-out-of-domain" if self.accepted_out_of_domain else "store marked in_domain: false"
            lines.append(f"OUT OF DOMAIN ({state}): {self.domain.message()}")
        return "\n".join(lines)

    def to_attrs(self) -> dict:
        """The run's result as the store records it in its attributes when the run ends (per frame for a
        trajectory); on completion also the time and the exact domain checks."""
        done = self.complete
        n_pred = self.n_electrons_predicted
        if self.frames is not None:
            n_pred = None if not done else [f["n_electrons_predicted"] for f in self.frames]
        factor = self.renormalization_factor
        final = {"complete": done, "n_electrons_predicted": n_pred, "renormalization_factor": factor,
                 "n_electrons_renormalized": None if factor is None else self.n_electrons_expected,
                 "max_std": self.max_std, "max_std_index": self.max_std_index,
                 "max_std_position": self.max_std_position,
                 "epistemic_threshold": self.epistemic_threshold, "n_epistemic_high": self.n_epistemic_high,
                 "max_std_epistemic": self.max_std_epistemic,
                 "max_std_epistemic_index": self.max_std_epistemic_index,
                 "max_std_epistemic_position": self.max_std_epistemic_position, "charges": self.charges}
        if self.frames is not None:
            final["max_std_frame"] = self.max_std_frame
        if done:
            final["completed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            final.update(self.domain.to_attrs(accepted=self.accepted_out_of_domain))
        return final
