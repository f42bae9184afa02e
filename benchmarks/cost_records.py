"""Write the DFT timings shipped with bigdens (``bigdens/active/cost_records.json``) from the data sets.

``suggest`` and ``learn`` fit their cost model to these records unless ``--cost-data`` is given, so that
they work from any folder.  Run from the repository root after new data sets are made:

    python -m benchmarks.cost_records [DATASET ...]      # default: every datasets/*/dataset.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bigdens.active import cost


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", help="data-set folders (default: datasets/*)")
    parser.add_argument("-o", "--output", default=str(cost.SHIPPED_RECORDS))
    args = parser.parse_args(argv)
    dirs = [Path(d) for d in args.data] or sorted(p.parent for p in Path("datasets").glob("*/dataset.json"))
    data = cost.write_records(dirs, args.output)
    print(f"wrote {args.output}: " + ", ".join(f"{p} {len(r)} records" for p, r in data["protocols"].items()))


if __name__ == "__main__":
    main()
