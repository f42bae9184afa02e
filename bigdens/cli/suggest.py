"""``bigdens suggest``: which candidate structures to compute with DFT, within a budget."""

from __future__ import annotations

import argparse

from ._common import add_cluster_arguments, add_device_argument, add_output_argument, config_default

HELP = "rank candidate structures by what their DFT would teach the model per core-second, and pick within a budget"


def dft_settings(protocol: str | None, model_path: str):
    """The DFT settings of the picks: those of ``--protocol``, else of the protocol the model at ``model_path``
    was trained on (:func:`bigdens.lineage.training_protocols`; v1 where the model records none), so that the
    picks can join its training data.  A model trained on several (stage 1 on one, stage 2 on another) gets the
    protocol of its last stage's data, which the picks join; the library default (v1) if that mixes too (the
    shipped Al model: pass ``--protocol v2`` for picks computed with converged k-points).

    Raises
    ------
    InputError
        When the model trained on data of a protocol this bigdens does not know, and no ``--protocol`` says
        which.
    """
    from ..bnn import load
    from ..datagen import DEFAULT_PROTOCOL, PROTOCOLS, protocol_settings
    from ..errors import InputError
    from ..lineage import training_protocols

    if protocol is not None:
        return protocol_settings(protocol)
    info = load(model_path).info
    found = training_protocols(info)
    if not found:
        return protocol_settings(DEFAULT_PROTOCOL)
    if not found <= PROTOCOLS.keys():
        raise InputError(f"model {model_path!r} was trained on data of protocol(s) {', '.join(sorted(found))}; say "
                         "which protocol the picks are computed in with --protocol v1 or v2")
    if len(found) > 1:  # e.g. the shipped Al model: stage 1 on v2 labels, stage 2 on v1 cells
        last = {e.get("protocol") for e in (info.get("data") or {}).get("train") or []}
        return protocol_settings(last.pop() if len(last) == 1 and last <= PROTOCOLS.keys() else DEFAULT_PROTOCOL)
    return protocol_settings(found.pop())


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Scoring and picking flags shared with ``bigdens learn``."""
    from ..active.acquisition import SCORE_SAMPLES, SCORE_SPACING, STRATEGIES
    from ..config import PredictConfig
    from ..datagen import PROTOCOL_ALIASES

    parser.add_argument("--protocol", choices=sorted(PROTOCOL_ALIASES), metavar="PROTOCOL",
                        help="DFT protocol of the picks, whose recorded timings price them: "
                             f"{', '.join(sorted(PROTOCOL_ALIASES))} (default: that of the model's training data; of its last "
                             "stage's when the stages differ; v1 when that stage mixes them, as the shipped Al model's)")

    parser.add_argument("--strategy", choices=STRATEGIES, default="uncertainty",
                        help="uncertainty (default): most excess flagged volume per core-second, diversified; "
                             "random; largest: largest cells first (baselines)")
    parser.add_argument("--spacing", type=float, default=SCORE_SPACING, metavar="H",
                        help=f"grid spacing on which candidates are scored, Å (default {SCORE_SPACING})")
    parser.add_argument("--mc-samples", type=int, default=SCORE_SAMPLES, metavar="S",
                        help=f"Monte Carlo weight samples per candidate (default {SCORE_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and of the random strategy")
    parser.add_argument("--cost-data", nargs="+", metavar="DATA",
                        help="data sets whose recorded DFT core-seconds fit the cost model (default: the timings "
                             "shipped with bigdens, this project's data sets on its 2-core machine)")
    parser.add_argument("--format", help="ASE format of candidate files when it cannot be guessed")
    add_device_argument(parser, default=config_default(PredictConfig, "device"), what="the scoring network")
    add_cluster_arguments(parser, what="scoring")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="calibrated model file (.safetensors)")
    parser.add_argument("candidates", nargs="+", metavar="CANDIDATE",
                        help="structure files (every frame), pool files (--save-pool), or generators: "
                             "'al|sige FLAGS' with the flags of `bigdens datagen`, e.g. 'al --cells 2 2 2 "
                             "--vacancies 1 --temperatures 300 900 --snapshots-per-temperature 10' (MD, no DFT)")
    parser.add_argument("--budget", type=float, metavar="CORE_SECONDS",
                        help="DFT core-seconds the picks may cost together (estimated)")
    parser.add_argument("--count", type=int, metavar="N", help="pick at most N (with or without --budget)")
    parser.add_argument("--exclude", nargs="+", metavar="DATA",
                        help="data sets or structure files never to pick (hold-out cells, data already computed)")
    add_selection_arguments(parser)
    parser.add_argument("--save-pool", metavar="POOL.json", help="also write the candidates (e.g. after MD) here")
    parser.add_argument("--plot", metavar="FILE.png", help="value against cost (default: next to -o, .png)")
    add_output_argument(parser, metavar="PLAN.json", required=False, default="suggestion.json",
                        help="plan file (default suggestion.json)")


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit
        from ..errors import InputError

        raise InputError(message)


def read_candidates(specs: list[str], *, format: str | None = None) -> list:
    """The candidate pool of ``bigdens suggest`` / ``learn``: structure files, pool files and generators.

    A spec is an existing file (any ASE format, every frame; or a pool ``.json`` written by
    ``--save-pool``) or a generator: ``"al|sige FLAGS"`` with the flags of ``bigdens datagen``
    (e.g. ``"al --cells 2 2 2 --vacancies 1 --temperatures 300 900 --snapshots-per-temperature 10"``).
    """
    import shlex
    from pathlib import Path

    from ..active import candidates as C
    from ..errors import InputError
    from .datagen import add_generator_arguments, check_generator_arguments

    pool = []
    for spec in specs:
        words = shlex.split(spec)
        if Path(spec).is_file():
            pool += C.load_pool(spec) if C.is_pool_file(spec) else C.from_file(spec, format=format)
        elif words and words[0] in ("al", "sige"):
            parser = _RaisingParser(prog=f"candidate generator {spec!r}", add_help=False)
            add_generator_arguments(parser)
            try:
                g = parser.parse_args(words[1:])
            except InputError as exc:
                raise InputError(f"candidate generator {spec!r}: {exc}") from None
            md = check_generator_arguments(g)
            pool += C.from_generator(words[0], temperatures=g.temperatures, snapshots=g.snapshots_per_temperature,
                                     md=md, cells=g.cells, x_values=g.x, vacancies=g.vacancies, void=g.void,
                                     seed=g.seed, source=spec)
        elif Path(spec).exists():
            raise InputError(f"candidate {spec!r} is a folder; give structure files or generators")
        else:
            raise InputError(f"candidate {spec!r} is neither a file nor a generator ('al FLAGS' or 'sige FLAGS', "
                             "with the flags of `bigdens datagen`)")
    pool, dropped = C.unique(pool)
    if dropped:
        import warnings

        warnings.warn(f"{len(dropped)} candidates are exact duplicates of others and were dropped "
                      f"({', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''})", stacklevel=2)
    if not pool:
        raise InputError("the candidate pool is empty; give structure files or generators")
    return pool


def exclude_hashes(paths: list[str] | None) -> list[str]:
    """Structure hashes of the snapshots or structures in ``paths``."""
    from pathlib import Path

    from ..active.candidates import from_file
    from ..data import load
    from ..store import structure_hash

    out = []
    for p in paths or []:
        if (Path(p) / "dataset.json").is_file() or Path(p).suffix == ".npz":
            out += [structure_hash(s.cell, s.positions, s.numbers) for s in load([p], allow_mixed_protocols=True)]
        else:
            out += [c.hash for c in from_file(p)]
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..active import cost as cost_model
    from ..active.suggest import Request, format_plan, plot_plan, suggest, write_plan
    from ..bnn import load
    from ..errors import InputError
    from ._common import cluster_config, cost_data_dirs

    request = Request(budget=args.budget, count=args.count, strategy=args.strategy, spacing=args.spacing,
                      samples=args.mc_samples, seed=args.seed)
    if args.seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {args.seed}")
    out = Path(args.output)
    if out.is_dir() or not out.absolute().parent.is_dir():
        raise InputError(f"-o {args.output!r}: give a file in an existing folder")
    load(args.model)  # a clear error before any MD
    config = cluster_config(args, model=args.model)
    cost = cost_model.from_datasets(cost_data_dirs(args.cost_data), protocol=dft_settings(args.protocol,
                                                                                          args.model).protocol)
    exclude = exclude_hashes(args.exclude)
    pool = read_candidates(args.candidates, format=args.format)
    if args.save_pool:
        from ..active.candidates import save_pool

        save_pool(args.save_pool, pool, request={"candidates": args.candidates})
    plan = suggest(args.model, pool, cost=cost, request=request, config=config, exclude=exclude, progress=True)
    write_plan(out, plan)
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot_plan(png, plan)
    print(format_plan(plan))
    print(f"wrote {out} and {png}")
    return 0
