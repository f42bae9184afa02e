"""``bigdens verify``: re-read every block of a store and check it against the ledger."""

from __future__ import annotations

import argparse

HELP = "check that every block of a predicted store is written and intact (exit 1 if not)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    parser.add_argument("--repair", action="store_true",
                        help="drop the ledger entries of corrupt blocks, so `bigdens predict --resume` recomputes them")


def run(args: argparse.Namespace) -> int:
    from .. import store

    report = store.verify(args.store, progress=True)
    done = report.n_blocks - len(report.missing)
    print(f"{args.store}: {done}/{report.n_blocks} blocks recorded, {len(report.missing)} missing, "
          f"{len(report.corrupt)} corrupt")
    if report.missing:
        shown = ", ".join(map(str, report.missing[:20])) + (" ..." if len(report.missing) > 20 else "")
        print(f"missing blocks: {shown}")
    for index, why in report.corrupt[:20]:
        print(f"corrupt block {index}: {why}")
    if report.ok:
        print("ok: every block matches its checksum")
        return 0
    attrs = store.read_attrs(args.store) or {}
    if attrs.get("complete"):
        store.update_attrs(args.store, complete=False)  # a damaged store must not look complete
        print("marked the store incomplete")
    if args.repair and report.corrupt:
        for index, _ in report.corrupt:
            store.ledger_file(args.store, index).unlink(missing_ok=True)
        print(f"dropped {len(report.corrupt)} ledger entries: `bigdens predict ... --resume` recomputes those blocks")
    elif report.corrupt:
        print("rerun with --repair, then `bigdens predict ... --resume`, to recompute the corrupt blocks")
    elif report.missing:
        print("finish the store with `bigdens predict ... --resume`")
    return 1
