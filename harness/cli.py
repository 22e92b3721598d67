"""``python -m harness [overrides] | list | report [...] | prepare [...] | --help``: subcommand dispatch and exit
codes.

Exit codes (README documents them): 0 = every cell has a record (a single cell: status ok);
2 = rejected input, one line, nothing written; a single cell that ends otherwise exits with its status's
code (`STATUS_EXIT`); 1 = the harness itself failed (one line plus the log path), or a record could not be
written everywhere it should have been.
"""
from __future__ import annotations

import os
import sys

from harness.errors import ConfigError

SUBCOMMANDS = {"list": "engines, dtypes, options, models, modes and experiments",
               "report": "leaderboards, the error matrix and the HTML page from the store (python -m reports)",
               "prepare": "download (or --install) what the config reads: checkpoint, LPIPS and CLIP weights; --check"}
STATUS_EXIT = {"ok": 0, "unsupported": 3, "error": 4, "oom": 5, "timeout": 6, "crashed": 7}
REJECTED = 2
HARNESS_FAILED = 1
#: Hydra's flags that only inspect (print a config, help, completion): they run no cell.
HYDRA_FLAGS = ("--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p", "--shell-completion", "-sc",
               "--hydra-help", "--version")
#: Hydra's flags that swap the config tree: refused, since every cell is checked against the shipped one.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def usage() -> str:
    from harness.compose import GROUPS, group_choices
    from engines.registry import HIDDEN

    lines = ["usage: python -m harness [-m] [GROUP=CHOICE ...] [KEY=VALUE ...]",
             "       python -m harness list | report [--store S --out D] | --help",
             "       python -m harness prepare [--check] [--install WHAT=PATH] [OVERRIDES]", "",
             "Runs one cell (or, with -m or a sweeping experiment, every combination) and stores its record.", "",
             "subcommands:"]
    lines += [f"  {name:8s} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "config groups (GROUP=CHOICE; experiments as +experiment=NAME):"]
    for group in GROUPS:
        choices = [c for c in group_choices(group) if not (group == "engine" and c in HIDDEN)]
        lines.append(f"  {group:10s} {', '.join(choices)}")
    lines += ["", "keys: dtype=TYPE (the engine's vocabulary), engine.options.NAME=VALUE, offload.options.NAME=VALUE,",
              "      run.device / run.store / run.cache_dir / run.timeout_s / run.force / run.gpu_memory_gib ...",
              "      (python -m harness list prints every option with its default and valid values)", "",
              "exit codes: 0 ok (a sweep: every cell has a record), 2 rejected input, 3 unsupported, 4 error,",
              "            5 oom, 6 timeout, 7 crashed (a single cell), 1 the harness failed"]
    return "\n".join(lines)


def _subcommand(args: list[str]) -> int | None:
    """Run a subcommand named by ``args[0]``; None when ``args`` are overrides of a run."""
    if not args:
        return None
    first = args[0]
    if first in ("-h", "--help", "help"):
        print(usage())
        return 0
    if "=" in first or first.startswith(("-", "+", "~")):
        return None
    if first == "list":
        from harness.listing import print_listing

        print_listing()
        return 0
    if first == "prepare":
        from harness import prepare

        return prepare.main(args[1:])
    if first == "report":
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "reports", *args[1:]])
    import difflib

    close = difflib.get_close_matches(first, list(SUBCOMMANDS), n=1, cutoff=0.5)
    hint = f" Did you mean: {close[0]}?" if close else ""
    print(f"error: unknown subcommand '{first}'.{hint} Subcommands: {', '.join(SUBCOMMANDS)}; "
          "a run takes overrides (KEY=VALUE); see python -m harness --help", file=sys.stderr)
    return REJECTED


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    code = _subcommand(args)
    if code is not None:
        return code
    if any(a.split("=", 1)[0] in CONFIG_FLAGS for a in args):
        print("error: --config-path / --config-name / --config-dir are not supported: the harness checks every "
              "cell against its own configs; add a config with +experiment=NAME or override keys", file=sys.stderr)
        return REJECTED
    if any(a.split("=", 1)[0] in HYDRA_FLAGS for a in args):
        return _hydra(args)  # Hydra's own inspection flags run nothing
    from harness import compose

    try:
        plan = compose.plan(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REJECTED
    if plan.multirun and not plan.specs:
        print("error: the sweep has no cell to run: every combination is outside its engine's dtypes "
              f"({len(plan.skipped)} skipped)", file=sys.stderr)
        return REJECTED
    if not plan.multirun:
        from harness import runner

        stored = runner.already_stored(plan.specs[0])
        if stored is not None:
            print(f"skip (already stored with status {stored['status']}; run.force=true re-runs): "
                  f"{plan.specs[0].label()}")
            return STATUS_EXIT.get(stored["status"], HARNESS_FAILED)
    return _hydra(args, plan)


def _terminate(signum, frame) -> None:
    """SIGTERM as an exception in the main thread, so the running cell's process group is killed on the way
    out (`harness.isolate.in_child`) instead of outliving this process."""
    raise SystemExit(128 + signum)


def _hydra(args: list[str], plan=None) -> int:
    import signal

    from harness import app

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)

    if plan is not None:
        os.environ["HARNESS_SWEEP_CELLS"] = str(len(plan.specs))
    sys.argv = [sys.argv[0], *args]
    try:
        app.task()
    except SystemExit as exc:
        if exc.code not in (0, None):
            return exc.code if isinstance(exc.code, int) else HARNESS_FAILED
    if plan is None:
        return 0
    if plan.multirun and app.OUTCOMES:
        from harness.console import sweep_summary

        print(sweep_summary(app.OUTCOMES, len(plan.skipped)))
    return exit_code(plan, app.OUTCOMES)


def exit_code(plan, outcomes: list) -> int:
    """The contract above, from what the jobs of this process did."""
    unstored = [o for o in outcomes if o.problems]
    for o in unstored:
        cell = (o.record or {}).get("cell_key", "?")
        for problem in o.problems:
            print(f"not stored: cell {cell}: {problem}", file=sys.stderr)
    if unstored:
        return HARNESS_FAILED
    if plan.multirun:
        return 0
    if not outcomes or outcomes[0].record is None:
        return 0  # skipped: the store already holds its record
    return STATUS_EXIT.get(outcomes[0].record["status"], HARNESS_FAILED)
