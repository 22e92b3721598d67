"""``python -m reports [--store S] [--out DIR]``: every report from the result store.

Writes into DIR: ``leaderboard.md`` and ``leaderboard.csv``, ``matrix.md`` and ``matrix.csv`` (the error
matrix), ``offload.md`` and ``offload.csv`` (offload modes side by side, when the store has offloaded cells),
``index.html`` (self-contained: tables, plots,
grids, error matrix), ``grids/*.png`` (BF16 beside each engine) and ``plots/*.png`` (memory vs quality vs
speed, speed, memory). The store is an SQLite file or a ``postgresql://`` URL.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("HARNESS_STORE", "results/results.sqlite"),
                        help="SQLite file or postgresql:// URL (default: results/results.sqlite or $HARNESS_STORE)")
    parser.add_argument("--out", default="reports/out", help="output folder (default: reports/out)")
    parser.add_argument("--title", default="Quantized diffusion leaderboard", help="title of index.html")
    parser.add_argument("--tile", type=int, default=256, help="side of one image in the grids, pixels")
    parser.add_argument("--no-images", action="store_true", help="skip grids and plots (tables only)")
    args = parser.parse_args(argv)

    from harness.store import ResultStore, is_postgres_url
    from reports import html, leaderboard, matrix, offload

    if not is_postgres_url(args.store) and not Path(args.store).is_file():
        print(f"error: no result store at {args.store} (run a cell first, or pass --store)", file=sys.stderr)
        return 2
    records = list(ResultStore(args.store).records())
    out = Path(args.out)
    paths = leaderboard.render(records, out)
    paths.update({f"matrix_{kind}": path for kind, path in matrix.render(records, out).items()})
    if offload.has_offload(records):
        paths.update(offload.render(records, out))
    grids, plots = [], []
    if not args.no_images:
        from reports import grid
        from reports import plots as plotting

        grids = grid.render(records, out / "grids", tile=args.tile)
        plots = plotting.render(records, out / "plots")
    source = repr(ResultStore(args.store)) if is_postgres_url(args.store) else args.store
    paths["html"] = html.render(records, out, grids=grids, plots=plots, title=args.title, source=source)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"grids: {len(grids)} in {out / 'grids'}\nplots: {len(plots)} in {out / 'plots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
