"""Merge result stores (e.g. from several device runs) into one, oldest source first, so the newest
record of a cell wins in reports. Usage: python scripts/merge_stores.py TARGET SOURCE [SOURCE ...]"""
import sys

from harness.store import ResultStore


def main(target: str, *sources: str) -> None:
    out = ResultStore(target)
    for source in sources:
        for record in ResultStore(source).records(latest_only=False):
            out.append(record)
    print(f"{target}: {out.count()} records")


if __name__ == "__main__":
    main(*sys.argv[1:])
