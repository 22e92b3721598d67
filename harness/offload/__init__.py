"""Offload modes: where a pipeline's modules live between and during forwards.

none: everything on the accelerator. model / sequential: diffusers' model and sequential CPU offload.
group: diffusers group offloading (block or leaf level, optional CUDA streams) for every component.
balanced: the in-house re-implementation of SD.Next's balanced offload (`harness.offload.balanced`).
Offload needs an accelerator: on a CPU-only run it is `Unsupported`.

`MODES` maps each mode to the function that installs it (imported only when the mode is chosen); its
options live in `harness.offload.options`. A mode function is called as
``fn(pipe, options, device, engine)`` with ``options`` resolved by `options.check_options` and returns a
description of what it installed (the start of the record's offload_report). Adding a mode: one entry
here, one in `options.SCHEMAS`, and its module.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch

from engines.base import Unsupported
from engines.registry import unknown_name_message
from harness.offload.options import check_options

MODES: dict[str, str] = {
    "none": "harness.offload.none:apply",
    "model": "harness.offload.diffusers_modes:model",
    "sequential": "harness.offload.diffusers_modes:sequential",
    "group": "harness.offload.diffusers_modes:group",
    "balanced": "harness.offload.balanced:apply",
}


def mode_function(name: str) -> Callable[..., dict]:
    """Import and return the function that installs mode ``name`` (`ValueError` naming the modes)."""
    if name not in MODES:
        raise ValueError(unknown_name_message("offload mode", name, list(MODES)))
    module_name, function = MODES[name].split(":")
    return getattr(importlib.import_module(module_name), function)


def check(name: str, device: torch.device) -> None:
    """`ValueError` for an unknown mode; `Unsupported` for an offload mode without a CUDA device."""
    if name not in MODES:
        raise ValueError(unknown_name_message("offload mode", name, list(MODES)))
    if name != "none" and device.type != "cuda":
        raise Unsupported(f"offload={name} needs a CUDA accelerator; this run's device is {device.type}")


def apply(pipe, name: str, options: dict, device: torch.device, *, engine=None) -> dict:
    """Install offload mode ``name`` with ``options``; return a description of what it did. ``engine``
    (the run's `engines.base.Engine`, or None) tells balanced offload which modules are quantized layers."""
    check(name, device)
    install = mode_function(name)
    return install(pipe, check_options(name, options), device, engine)


def resident_budget(name: str, options: dict, device: torch.device) -> int:
    """Bytes of quantized components that mode ``name`` accepts already on ``device`` when it is installed
    (the loader may leave them there instead of handing them over on the CPU): balanced offload's high
    watermark; 0 for every other mode, which starts from the CPU."""
    if name != "balanced" or device.type != "cuda":
        return 0
    from harness.offload import balanced

    opts = check_options(name, options)
    return int(opts["high_watermark"] * balanced.usable_bytes(device, opts["usable_gib"]))


def stats(pipe) -> dict:
    """What the offloader did during generation (placement, moves, bytes moved), merged into the
    record's offload_report after generation; {} for modes that keep no books (none/model/sequential/group)."""
    from harness.offload import balanced

    return balanced.stats(pipe)
