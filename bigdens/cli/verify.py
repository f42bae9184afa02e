"""``bigdens verify``: check a store's arrays' metadata, coordinates and atoms, and every block against the ledger."""

from __future__ import annotations

import argparse

HELP = ("check that every block of a predicted store is written and intact, and its metadata, coordinates and "
        "atoms as written (exit 1 if not)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    parser.add_argument("--repair", action="store_true",
                        help="drop the ledger entries of corrupt blocks, so `bigdens predict --resume` recomputes them")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from .. import store, storelock

    if store.read_attrs(args.store) is None or not os.access(Path(args.store).absolute().parent, os.W_OK):
        return _verify(args)  # not a store (one clear line follows), or read-only: nobody writes it
    # verify marks a damaged store incomplete and --repair drops entries: never under a running writer.
    with storelock.hold(args.store, run_id=None, command="bigdens verify"):
        return _verify(args)


def _verify(args: argparse.Namespace) -> int:
    from .. import charges, store

    report = store.verify(args.store, progress=True)
    # The charges are summed from the blocks' files: only worth checking when everything else is intact.
    charge_problems = charges.check_store(args.store, repair=args.repair) if report.ok else []
    report.problems += charge_problems
    done = report.n_blocks - len(report.missing)
    kind = "blocks" if report.n_frames is None else f"(frame, block) units of {report.n_frames} frames"
    print(f"{args.store}: {done}/{report.n_blocks} {kind} recorded, {len(report.missing)} missing, "
          f"{len(report.corrupt)} corrupt, {len(report.problems)} other problems")
    for name, why in report.problems:
        print(f"problem in {name}: {why}")
    if report.missing:
        shown = ", ".join(map(str, report.missing[:20])) + (" ..." if len(report.missing) > 20 else "")
        kind = "blocks" if report.n_frames is None else f"units (frame · {report.blocks_per_frame} + block)"
        print(f"missing {kind}: {shown}")
    for index, why in report.corrupt[:20]:
        print(f"corrupt {report.label(index)}: {why}")
    attrs = store.read_attrs(args.store) or {}
    if report.ok and not attrs.get("complete"):
        print("incomplete: every block is recorded but the run did not finish (electrons, domain checks, charges); "
              "finish it with `bigdens predict ... --resume`")
        return 1
    if report.ok:
        print("ok: every block matches its checksum; metadata, coordinates, atoms, charges and the run's results "
              "as written")
        return 0
    if charge_problems and len(charge_problems) == len(report.problems):  # the density is intact: stays complete
        print("rewrote charge, charge_std and the charges attribute from the blocks' charges files" if args.repair
              else "rerun with --repair to write the charges again from the blocks' charges files")
        return 1
    if attrs.get("complete"):
        store.update_attrs(args.store, complete=False)  # a damaged store must not look complete
        print("marked the store incomplete")
    fatal = [name for name, _ in report.problems if not store.repairable(name)]
    if fatal:
        print(f"cannot repair {', '.join(sorted(set(fatal)))}: predict the store again with "
              "`bigdens predict ... --overwrite`")
    elif args.repair and (report.corrupt or report.problems):
        rebuilt = store.repair_metadata(args.store, report.problems)
        if rebuilt:
            print(f"rebuilt {', '.join(rebuilt)}")
        if any(name == "attributes" for name, _ in report.problems):
            print("`bigdens predict ... --resume` writes the run's results again from the ledger")
        if any(name in store.VARIABLES for name in rebuilt):
            print("dropped every ledger entry: `bigdens predict ... --resume` recomputes every block")
        elif report.corrupt:
            for index, _ in report.corrupt:
                store.ledger_file(args.store, index).unlink(missing_ok=True)
            print(f"dropped {len(report.corrupt)} ledger entries: `bigdens predict ... --resume` recomputes those "
                  "blocks")
    elif report.problems and all(name == "attributes" or name.startswith("charge") for name, _ in report.problems):
        alone = any(name.startswith("charge") for name, _ in report.problems)
        print("`bigdens predict ... --resume` writes the run's results again from the ledger"
              + (" (`bigdens verify --repair` rewrites the charges alone)" if alone else ""))
    elif report.problems:
        print("rerun with --repair, then `bigdens predict ... --resume`, to rebuild the damaged arrays and "
              "recompute what they held")
    elif report.corrupt:
        print("rerun with --repair, then `bigdens predict ... --resume`, to recompute the corrupt blocks")
    elif report.missing:
        print("finish the store with `bigdens predict ... --resume`")
    return 1
