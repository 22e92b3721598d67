"""Prompt sets shipped with the harness: ``conf/prompts/<name>.yaml`` holds a list ``prompts``.

A workload names a set with ``prompt_set`` and takes its first ``prompt_count`` prompts (null = all of them);
`expand` puts them into the workload's ``prompts``, so the cell key and the reference key hash the prompts
themselves. A workload without a set keeps its own ``prompts`` and carries neither key.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from harness.errors import ConfigError
from harness.paths import conf_dir


def available() -> list[str]:
    """Names of the shipped prompt sets."""
    return sorted(p.stem for p in (Path(conf_dir()) / "prompts").glob("*.yaml"))


@lru_cache(maxsize=8)
def load(name: str) -> tuple[str, ...]:
    """Every prompt of set ``name``, in file order; `ConfigError` for an unknown set or a malformed file."""
    path = Path(conf_dir()) / "prompts" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"workload.prompt_set={name!r} is not a shipped prompt set; available: "
                          f"{', '.join(available()) or 'none'}")
    prompts = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"prompt set {name!r} ({path}) must hold a non-empty list `prompts` of non-empty strings")
    return tuple(p.strip() for p in prompts)


def expand(work: dict) -> dict:
    """Resolve ``work``'s prompt set in place and return it: ``prompts`` becomes the set's first
    ``prompt_count`` prompts. Naming a set and listing prompts too, or a count outside 1..len(set), is a
    `ConfigError`. Without a set, the two keys are dropped (cell keys of such workloads stay as they were)."""
    from harness.validate import check_name

    name, count = work.pop("prompt_set", None), work.pop("prompt_count", None)
    if name is None:
        if count is not None:
            raise ConfigError("workload.prompt_count needs workload.prompt_set (a shipped prompt set)")
        return work
    check_name("workload.prompt_set", name)
    if work.get("prompts"):
        raise ConfigError("workload.prompt_set replaces workload.prompts: set one of them (prompts=[] with a set)")
    every = load(name)
    if count is not None and not 1 <= count <= len(every):
        raise ConfigError(f"workload.prompt_count must be between 1 and {len(every)} (the size of prompt set "
                          f"{name!r}), got {count}")
    work["prompts"] = list(every[:count])
    work["prompt_set"], work["prompt_count"] = name, count
    return work
