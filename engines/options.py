"""Typed option schemas: one frozen dataclass per engine (and per offload / compile mode of the harness).

A schema is the single source of an option's name, type, default, meaning and valid range: Hydra
composes it as the structured config of its group, `python -m harness list` and README print it, and
`check` enforces it. Field metadata (set with `option`): ``help`` (one line), and optionally ``choices``,
``min``, ``max``.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable


def option(default: Any = None, help: str = "", *, choices: tuple | None = None, min: float | None = None,
           max: float | None = None, env: str | None = None) -> Any:
    """A dataclass field for a schema: its default, meaning and valid range. With ``env``, the default is
    that environment variable's value when it is set (read when the options are resolved)."""
    meta = {"help": help}
    default_factory = None
    if env is not None:
        meta["env"] = env
        default_factory = (lambda: __import__("os").environ.get(env, default))
    if choices is not None:
        meta["choices"] = tuple(choices)
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    meta["default"] = default
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The schema of something that takes no options."""


def defaults(schema: type) -> dict[str, Any]:
    """Every option of ``schema`` with its default."""
    return dataclasses.asdict(schema())


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin in (list, typing.List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def valid_range(f: dataclasses.Field, tp: Any) -> str:
    """What values field ``f`` (of type ``tp``) accepts, in words."""
    meta = f.metadata
    if "choices" in meta:
        text = " | ".join(str(c) for c in meta["choices"])
        return f"{text} | null" if _optional(tp) else text
    parts = [_type_name(_base(tp))]
    if "min" in meta and "max" in meta:
        parts.append(f"in [{meta['min']}, {meta['max']}]")
    elif "min" in meta:
        parts.append(f">= {meta['min']}")
    elif "max" in meta:
        parts.append(f"<= {meta['max']}")
    return " ".join(parts) + (" or null" if _optional(tp) else "")


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def _base(tp: Any) -> Any:
    if _optional(tp):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _type_ok(value: Any, tp: Any) -> bool:
    if value is None:
        return _optional(tp) or tp is Any
    tp = _base(tp)
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if typing.get_origin(tp) in (list, typing.List):
        inner = typing.get_args(tp)[0]
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    return isinstance(value, tp)


def check(schema: type, values: dict | None, owner: str) -> dict[str, Any]:
    """``values`` resolved against ``schema`` (defaults filled in), or `ValueError` with one line naming
    the first bad key or value and what is valid. ``owner`` names the option's group in messages
    (e.g. ``engine 'torchao'``, ``offload 'balanced'``)."""
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], names, n=1, cutoff=0.5)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise ValueError(f"{owner} has no option '{unknown[0]}'.{hint} Options: {', '.join(names) or 'none'}")
    hints = _hints(schema)
    resolved = defaults(schema)
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value, tp = values[f.name], hints[f.name]
        if isinstance(value, float) and _base(tp) is int and value.is_integer():
            value = int(value)
        bad = not _type_ok(value, tp)
        meta = f.metadata
        if not bad and value is not None:
            if "choices" in meta and value not in meta["choices"]:
                bad = True
            elif "min" in meta and value < meta["min"] or "max" in meta and value > meta["max"]:
                bad = True
        if bad:
            raise ValueError(f"{owner} option {f.name}={value!r} is not valid: expected {valid_range(f, tp)}")
        resolved[f.name] = list(value) if isinstance(value, tuple) else value
    return resolved


def rows(schema: type) -> list[tuple[str, str, str, str]]:
    """(name, default, valid values, meaning) per option, for listings and README."""
    hints = _hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        if "default" in f.metadata:
            default = f.metadata["default"]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, "null" if default is None else str(default).lower() if isinstance(default, bool)
                    else str(default), valid_range(f, hints[f.name]), f.metadata.get("help", "")))
    return out
