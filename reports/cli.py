"""``python -m reports [COMMAND] [--store S] [--out DIR] ...``: the reports' one entry point.

This module is the only one in `reports` that loads a store (`reports.records.load`, once per command) and
prints; the report modules take the records and write files. Exit status: 0 done, 1 a regression
(``regression``), 2 bad arguments (argparse) or no store (one line on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reports import records as store_records

DEFAULT_STORE = "results/results.sqlite"
DEFAULT_TITLE = "Quantized diffusion leaderboard"
#: command -> what it writes (its help line); ``all`` is the default.
COMMANDS = {
    "all": "leaderboard, matrix, offload and lora (when the store has such cells) and html, into --out",
    "leaderboard": "leaderboard.md, leaderboard.csv: one table per model x device",
    "matrix": "matrix.md, matrix.csv: the error matrix, checked against the known upstream reports",
    "offload": "offload.md, offload.csv: offload modes side by side",
    "lora": "lora.md, lora.csv: cells with a LoRA, its retention, speed and memory with and without it",
    "html": "index.html (self-contained: tables, error matrix, plots, grids) with grids/*.png, plots/*.png",
    "regression": "the store against the previous night's (--baseline); exit 1 on a regression",
}
USAGE = "python -m reports [COMMAND] [--store S] [--out DIR] [options]"
DESCRIPTION = ("Render reports from a result store: an SQLite file or a postgresql:// URL (default:\n"
               f"$HARNESS_STORE, else {DEFAULT_STORE}). 'python -m reports COMMAND -h' lists a command's options.")
EPILOG = "commands (default: all):\n" + "\n".join(f"  {name:<12} {text}" for name, text in COMMANDS.items())


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=24, width=110)


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr (with "did you mean" for a mistyped command) and exit code 2."""

    def error(self, message: str):
        import difflib

        if "invalid choice" in message and "argument COMMAND" in message:
            typed = message.split("invalid choice: ", 1)[1].split(" ", 1)[0].strip("'")
            near = difflib.get_close_matches(typed, list(COMMANDS), n=1)
            message = (f"unknown command {typed!r}." + (f" Did you mean: {near[0]}?" if near else "")
                       + f" Commands: {', '.join(COMMANDS)}")
        self.exit(2, f"error: {self.prog}: {message} ('{self.prog} -h' lists the options)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m reports", usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                  formatter_class=_formatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS, parser_class=_Parser)
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, prog=f"python -m reports {name}", description=text, formatter_class=_formatter)
        sub.add_argument("--store", default=os.environ.get("HARNESS_STORE", DEFAULT_STORE),
                         help=("tonight's results: " if name == "regression" else "")
                         + f"SQLite file or postgresql:// URL (default: $HARNESS_STORE, else {DEFAULT_STORE})")
        if name == "regression":
            _regression_arguments(sub)
            continue
        sub.add_argument("--out", default="reports/out", help="output folder (default: reports/out)")
        if name in ("all", "matrix", "html"):
            sub.add_argument("--known", default=None,
                             help="known upstream reports for the matrix (default: reports/known_issues.yaml)")
        if name in ("all", "html"):
            sub.add_argument("--title", default=DEFAULT_TITLE, help="title of index.html")
            sub.add_argument("--tile", type=int, default=256, help="side of one image in the grids, pixels")
            sub.add_argument("--no-images", action="store_true", help="skip grids and plots (tables only)")
    return top


def _regression_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--baseline", required=True, help="the previous night's results (file or URL)")
    sub.add_argument("--config", default=None, help="thresholds (default: conf/regression.yaml)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="METRIC.KEY=VALUE",
                     help="override a threshold, e.g. steps_per_s.relative=0.1 (repeatable)")
    sub.add_argument("--require-baseline", action="store_true",
                     help="fail when there is no baseline (default: pass with a note, for the first night)")
    sub.add_argument("--summary", default=None,
                     help="also append the markdown report to this file (e.g. $GITHUB_STEP_SUMMARY)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "all")  # bare options: every report
    args = parser().parse_args(argv)
    if args.command == "regression":
        return _regression(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        known = _known_issues(args)
        records = store_records.load(args.store)
    except (ValueError, FileNotFoundError) as exc:  # no store (NoStore), a missing or malformed --known file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a file that is no result store (sqlite3 / psycopg errors alike)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: --store {store_records.source_label(args.store)} could not be read as a result store "
              f"({type(exc).__name__}: {first})", file=sys.stderr)
        return 2
    for kind, path in RENDERERS[args.command](records, args, known).items():
        print(f"{kind}: {path}")
    return 0


def _known_issues(args) -> list[dict] | None:
    """The ``--known`` annotations, None for the shipped ones (or a command without a matrix)."""
    if not getattr(args, "known", None):
        return None
    from reports.matrix import load_known_issues

    return load_known_issues(args.known)


def _leaderboard(records: list[dict], args, known) -> dict:
    from reports import leaderboard

    return leaderboard.render(records, args.out)


def _matrix(records: list[dict], args, known, prefix: str = "") -> dict:
    from reports import matrix

    return {f"{prefix}{kind}": path for kind, path in matrix.render(records, args.out, known).items()}


def _offload(records: list[dict], args, known) -> dict:
    from reports import offload_table

    return offload_table.render(records, args.out)


def _lora(records: list[dict], args, known) -> dict:
    from reports import lora_table

    return lora_table.render(records, args.out)


def _html(records: list[dict], args, known) -> dict:
    from reports import html

    grids, plots = [], []
    out = Path(args.out)
    if not args.no_images:
        from reports import grid
        from reports import plots as plotting

        grids = grid.render(records, out / "grids", tile=args.tile)
        plots = plotting.render(records, out / "plots")
    page = html.render(records, out, grids=grids, plots=plots, title=args.title,
                       source=store_records.source_label(args.store), known=known)
    return {"html": page, "grids": f"{len(grids)} in {out / 'grids'}", "plots": f"{len(plots)} in {out / 'plots'}"}


def _all(records: list[dict], args, known) -> dict:
    from reports import lora_table, offload_table

    paths = _leaderboard(records, args, known)
    paths.update(_matrix(records, args, known, prefix="matrix_"))
    if offload_table.has_offload(records):
        paths.update(_offload(records, args, known))
    if lora_table.has_lora(records):
        paths.update(_lora(records, args, known))
    paths.update(_html(records, args, known))
    return paths


#: command -> ``(records, args, known issues) -> {what: path}`` (what it wrote, printed one per line).
RENDERERS = {"all": _all, "leaderboard": _leaderboard, "matrix": _matrix, "offload": _offload, "lora": _lora,
             "html": _html}


def _regression(args) -> int:
    from reports import regression

    try:
        config = regression.load_config(args.config, args.overrides)
        tonight = store_records.load(args.store)
    except (ValueError, FileNotFoundError) as exc:  # a bad --config / --set, or no store (NoStore)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        baseline = store_records.load(args.baseline)
    except store_records.NoStore:
        _emit(regression.no_baseline(args.baseline), args.summary)
        return 2 if args.require_baseline else 0
    outcome = regression.compare(tonight, baseline, config)
    _emit(regression.to_markdown(outcome, config), args.summary)
    return 1 if outcome.regressions else 0


def _emit(text: str, summary: str | None) -> None:
    """Print the regression report, and append it to the ``--summary`` file when one is given."""
    print(text, end="")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
