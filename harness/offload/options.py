"""The options of every offload mode: one frozen dataclass per mode, the single source of each option's
name, type, default, meaning and valid range (field metadata: ``help``, and ``choices`` or ``min`` /
``max``, both bounds inclusive). Field types are those OmegaConf accepts in a structured config.

`check_options` resolves a config's options against its mode's schema (defaults filled in), or raises
`ValueError` with one line naming the bad key or value and what is valid.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from engines.options import check
from engines.registry import unknown_name_message


@dataclass(frozen=True)
class NoneOptions:
    """offload=none: everything stays on the accelerator; no options."""


@dataclass(frozen=True)
class ModelOptions:
    """offload=model: diffusers' model CPU offload (one component on the GPU at a time); no options."""


@dataclass(frozen=True)
class SequentialOptions:
    """offload=sequential: diffusers' sequential CPU offload (leaf modules streamed); no options."""


@dataclass(frozen=True)
class GroupOptions:
    """offload=group: diffusers group offloading, applied to every component."""

    offload_type: str = field(default="block_level", metadata={
        "help": "block_level: groups of blocks move together; leaf_level: each leaf module moves on its own",
        "choices": ("block_level", "leaf_level")})
    num_blocks_per_group: int = field(default=1, metadata={
        "help": "blocks moved together at block_level (unused at leaf_level)", "min": 1})
    use_stream: bool = field(default=False, metadata={
        "help": "prefetch the next group on a CUDA stream while the current one computes"})


@dataclass(frozen=True)
class BalancedOptions:
    """offload=balanced (`harness.offload.balanced`). Watermarks and ``max_fill`` are fractions of the
    usable GPU memory; they must satisfy 0 < low_watermark <= high_watermark <= 1 and 0 < max_fill <= 1."""

    high_watermark: float = field(default=0.7, metadata={
        "help": "fraction of usable GPU memory a component may fill with its layers when it is dispatched",
        "min": 0.0, "max": 1.0})
    low_watermark: float = field(default=0.2, metadata={
        "help": "eviction=low_watermark: idle components go back to the CPU while GPU use is above this "
                "fraction of usable memory", "min": 0.0, "max": 1.0})
    eviction: str = field(default="as_needed", metadata={
        "help": ("when idle components leave the GPU. as_needed: only when the dispatched component cannot "
                 "run beside them, or once streaming its layers has moved more bytes than sending one of them "
                 "back would; low_watermark: SD.Next's rule, at every dispatch while GPU use is above "
                 "low_watermark"),
        "choices": ("as_needed", "low_watermark")})
    pin_memory: bool = field(default=True, metadata={
        "help": ("keep the CPU copies of layers that move more than once (streamed or evicted) in pinned "
                 "memory: asynchronous, faster copies, more locked host RAM")})
    usable_gib: Optional[float] = field(default=None, metadata={
        "help": "usable GPU memory in GiB; null = the per-process cap (run.gpu_memory_fraction / "
                "run.gpu_memory_gib), else the whole card", "min": 0.0})
    max_fill: Optional[float] = field(default=0.95, metadata={
        "help": "once a component's working memory is measured (its first forward), it may fill this fraction "
                "of usable memory minus that working memory; null = stay under high_watermark",
        "min": 0.0, "max": 1.0})
    release_cache: bool = field(default=True, metadata={
        "help": "return the allocator's cached free blocks to the driver before placing layers, so placed layers "
                "do not land among the holes streaming left (the cap binds reserved memory)"})


#: Offload mode -> its options schema (the same names as `harness.offload.MODES`).
SCHEMAS: dict[str, type] = {
    "none": NoneOptions,
    "model": ModelOptions,
    "sequential": SequentialOptions,
    "group": GroupOptions,
    "balanced": BalancedOptions,
}


def schema(mode_name: str) -> type:
    """The options dataclass of offload mode ``mode_name`` (`ValueError` naming the modes if unknown)."""
    if mode_name not in SCHEMAS:
        raise ValueError(unknown_name_message("offload mode", mode_name, list(SCHEMAS)))
    return SCHEMAS[mode_name]


def defaults(mode_name: str) -> dict[str, Any]:
    """Every option of offload mode ``mode_name`` with its default."""
    return dataclasses.asdict(schema(mode_name)())


def check_balanced(high_watermark: float, low_watermark: float, max_fill: Optional[float]) -> None:
    """The cross-field rules of balanced offload (`ValueError`, one line, when one is broken)."""
    if not 0 < low_watermark <= high_watermark <= 1:
        raise ValueError(f"balanced offload needs 0 < low_watermark <= high_watermark <= 1, got "
                         f"low={low_watermark}, high={high_watermark}")
    if max_fill is not None and not 0 < max_fill <= 1:
        raise ValueError(f"balanced offload needs 0 < max_fill <= 1 (or max_fill null), got {max_fill}")


def _balanced_rules(values: dict) -> None:
    check_balanced(values["high_watermark"], values["low_watermark"], values["max_fill"])
    if values["usable_gib"] is not None and values["usable_gib"] <= 0:
        raise ValueError(f"balanced offload needs usable_gib > 0 (or usable_gib null), got {values['usable_gib']}")


#: Rules across fields, per mode, run on the resolved options.
_RULES = {"balanced": _balanced_rules}


def check_options(mode_name: str, options: Optional[dict]) -> dict[str, Any]:
    """``options`` of offload mode ``mode_name`` resolved against its schema (`engines.options.check`:
    defaults filled in) and its cross-field rules; `ValueError` (one line) naming the valid options or
    values otherwise."""
    resolved = check(schema(mode_name), options, f"offload '{mode_name}'")
    for name, value in resolved.items():
        if isinstance(value, int) and not isinstance(value, bool) and typing.get_type_hints(
                schema(mode_name))[name] in (float, Optional[float]):
            resolved[name] = float(value)
    rules = _RULES.get(mode_name)
    if rules is not None:
        rules(resolved)
    return resolved
