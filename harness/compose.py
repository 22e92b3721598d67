"""Compose and validate every cell of an invocation before Hydra (or anything else) writes a file.

A single run composes one config; a sweep (``-m``, or an experiment that sets ``hydra.mode: MULTIRUN``)
is expanded the way Hydra's basic sweeper expands it (its ``hydra.sweeper.params`` plus the command
line's sweep overrides) and every job is composed and validated. Any problem raises `ConfigError` with one
line; combinations outside an engine's dtype vocabulary are a sweep's skips, not problems.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.errors import ConfigError, UnsupportedDtype
from harness.paths import conf_dir

GROUPS = ("model", "engine", "offload", "compile", "lora", "workload", "metrics", "experiment")
MULTIRUN_FLAGS = ("-m", "--multirun")


@dataclass
class Plan:
    multirun: bool
    specs: list = field(default_factory=list)
    #: One line per combination a sweep skips (a dtype outside the engine's vocabulary).
    skipped: list[str] = field(default_factory=list)


def group_choices(group: str) -> list[str]:
    from pathlib import Path

    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml") if not p.stem.startswith("base_"))


def check_group_overrides(overrides: list[str]) -> None:
    """Unknown choices for a config group, with "did you mean", before Hydra composes anything."""
    from engines.registry import HIDDEN, unknown_name_message

    for arg in overrides:
        if "=" not in arg or arg.startswith(("-", "hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in GROUPS or not value or value.startswith(("[", "{", "glob(", "choice(", "range(")):
            continue
        choices = group_choices(key)
        for v in (v.strip() for v in value.split(",")):
            if v not in choices:
                shown = [c for c in choices if not (key == "engine" and c in HIDDEN)]
                raise ConfigError(unknown_name_message(key, v, shown))


def plan(args: list[str]) -> Plan:
    """Every cell ``python -m harness ARGS`` would run, validated; `ConfigError` on the first problem."""
    from hydra import initialize_config_dir
    from hydra.types import RunMode

    from harness.schema import register

    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    check_group_overrides(overrides)  # before the schemas, which import every engine (and torch)
    register()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = _compose(_first_of_sweeps(overrides), with_hydra=True)
        multirun = any(a in MULTIRUN_FLAGS for a in args) or cfg.hydra.mode == RunMode.MULTIRUN
        if not multirun:
            if _first_of_sweeps(overrides) != overrides:
                raise ConfigError("these overrides sweep (a,b / choice(...)): add -m to run every combination")
            return Plan(False, [_validate(cfg)])
        out = Plan(True)
        for job in _sweep_jobs(cfg, overrides):
            skip = _cheap_skip(job)
            if skip:
                out.skipped.append(skip)
                continue
            try:
                out.specs.append(_validate(_compose(job, with_hydra=False)))
            except UnsupportedDtype as exc:
                out.skipped.append(str(exc))
        return out


def _sweep_jobs(cfg, overrides: list[str]) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    task = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = _parser().parse_overrides(params + task)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors are bad input
        raise ConfigError(f"cannot expand the sweep: {_first_line(exc)}") from None


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """The overrides with every sweep (``a,b``, ``choice(...)``) replaced by its first value: enough to
    compose the config and learn whether (and what) it sweeps."""
    try:
        parsed = _parser().parse_overrides(overrides)
        out = []
        for text, override in zip(overrides, parsed):
            if override.is_sweep_override() and override.is_discrete_sweep():
                first = next(iter(override.sweep_string_iterator()), None)
                out.append(f"{override.get_key_element()}={first}")
            else:
                out.append(text)
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors are bad input
        raise ConfigError(f"cannot parse the overrides: {_first_line(exc)}") from None
    return out


def _parser():
    """Hydra's override parser, with the config loader that ``glob(...)`` sweeps need."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = GlobalHydra.instance()
    return OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)


def _cheap_skip(job: list[str]) -> str | None:
    """The skip line of a job whose engine and dtype overrides alone show the dtype is outside the engine's
    vocabulary (no composition needed)."""
    from engines.registry import ENGINES, get_engine_class

    values = dict(o.lstrip("+").split("=", 1) for o in job if "=" in o)
    engine, dtype = values.get("engine"), values.get("dtype")
    if engine not in ENGINES or dtype in (None, "null", "") or not re.fullmatch(r"[A-Za-z0-9_.-]+", dtype):
        return None  # quoted or interpolated: only composition knows the value
    cls = get_engine_class(engine)
    if dtype in cls.dtypes:
        return None
    return f"engine '{engine}' does not support dtype {dtype!r}. Supported: {', '.join(cls.dtypes)}"


def _compose(overrides: list[str], with_hydra: bool):
    from hydra import compose

    try:
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)
    except Exception as exc:  # noqa: BLE001 - every composition failure is bad input
        raise ConfigError(explain(exc)) from None


def _validate(cfg):
    from harness.validate import validate

    return validate(cfg)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def explain(exc: BaseException) -> str:
    """One line for a Hydra / OmegaConf composition failure: the key, what is wrong, what is valid."""
    import dataclasses

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from engines.options import check as check_options
    from harness.schema import NODE_SCHEMAS

    err = exc
    while err is not None and not isinstance(err, OmegaConfBaseException):
        err = err.__cause__ or err.__context__
    if err is None:
        return _first_line(exc)
    full_key = getattr(err, "full_key", None) or ""
    object_type = getattr(err, "object_type", None)
    type_name = getattr(object_type, "__name__", None)
    key = full_key.rsplit(".", 1)[-1]
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)):
        if type_name in NODE_SCHEMAS:
            owner, schema = NODE_SCHEMAS[type_name]
            try:
                check_options(schema, {key: None}, owner)
            except ValueError as bad:
                return str(bad)
        if object_type is not None and dataclasses.is_dataclass(object_type):
            import difflib

            names = [f.name for f in dataclasses.fields(object_type)]
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f" Did you mean: {full_key.rsplit('.', 1)[0]}.{close[0]}?" if close else ""
            return f"unknown key '{full_key}'.{hint} Keys there: {', '.join(names)}"
        return f"unknown key '{full_key}'"
    message = _first_line(err)
    return f"{full_key}: {message}" if full_key else message
