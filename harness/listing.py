"""``python -m harness list``: what can be chosen, read from the registry and conf/ (never hard-coded)."""
from __future__ import annotations

from pathlib import Path

from engines.registry import available, get_engine_class

CONF = Path(__file__).resolve().parent.parent / "conf"


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def print_listing() -> None:
    print("engines (engine=NAME dtype=TYPE):")
    for name in available():
        if name == "fault":
            continue
        try:
            cls = get_engine_class(name)
        except Exception as exc:  # noqa: BLE001 - a broken engine module must not hide the others
            print(f"  {name:10s} unavailable: {type(exc).__name__}: {exc}")
            continue
        missing = cls.missing_packages()
        note = f"  [missing: {', '.join(missing)}]" if missing else ""
        print(f"  {name:10s} dtypes: {', '.join(cls.dtypes)} (default {cls.default_dtype}); "
              f"modes: {', '.join(cls.modes)}{note}")
    for group in ("model", "offload", "compile", "workload", "experiment"):
        print(f"{group}: {', '.join(_choices(group))}")
