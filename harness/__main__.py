"""``python -m harness [overrides]`` runs a cell (or a sweep with -m); subcommands:

  python -m harness list            engines, their dtypes and modes; models; offload/compile modes
  python -m harness report [...]    leaderboards from the store (same as ``python -m reports``)
"""
from __future__ import annotations

import sys
from pathlib import Path

from engines.registry import unknown_name_message

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "engine", "offload", "compile", "workload", "metrics", "experiment")


def check_group_overrides(args: list[str]) -> str | None:
    """Unknown choices for a config group, with "did you mean" (before Hydra composes anything)."""
    for arg in args:
        if "=" not in arg or arg.startswith(("-", "hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in GROUPS or not value or value.startswith(("[", "{", "glob(", "choice(", "range(")):
            continue
        choices = sorted(p.stem for p in (CONF / key).glob("*.yaml") if not p.stem.startswith("base_"))
        values = [v.strip() for v in value.split(",")]
        if key == "engine" and "fault" not in values:  # test-only engine: accepted, never suggested
            choices = [c for c in choices if c != "fault"]
        for v in values:
            if v not in choices:
                return unknown_name_message(key, v, choices)
    return None


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "list":
        from harness.listing import print_listing

        print_listing()
        return
    if args and args[0] == "report":
        from reports.__main__ import main as report_main

        sys.exit(report_main(args[1:]))
    problem = check_group_overrides(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    from harness.app import task

    task()


if __name__ == "__main__":
    main()
