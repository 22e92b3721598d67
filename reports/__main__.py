"""``python -m reports [--store PATH] [--out DIR]``: leaderboards (markdown + CSV) from the result store."""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("--store", default=os.environ.get("HARNESS_STORE", "results/results.sqlite"),
                        help="SQLite result store (default: results/results.sqlite or $HARNESS_STORE)")
    parser.add_argument("--out", default="reports/out", help="folder for leaderboard.md and leaderboard.csv")
    args = parser.parse_args(argv)
    from reports.leaderboard import from_store

    try:
        paths = from_store(args.store, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
