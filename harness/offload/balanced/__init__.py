"""Balanced offload: an in-house re-implementation of SD.Next's balanced offload (design.md).

Components are dispatched onto the GPU at their forward, filled up to the watermarks with whole layers
and stream the rest (`manager`); the layers that move together are the placement units (`units`);
which units stay is a pure first-fit plan (`placement`); moving them keeps CPU copies of plain tensors
(`moves`); the hooks that trigger all this are in `hooks`. Options: `harness.offload.options.BalancedOptions`.
Watermarks are fractions of the usable GPU memory: the per-process cap when ``run.gpu_memory_fraction``
(or ``run.gpu_memory_gib``) is set, else the card (``usable_gib`` overrides both).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.measure import GIB
from harness.offload.balanced.manager import BalancedOffload, Component
from harness.offload.balanced.units import Unit, build_units
from harness.offload.options import check_options

__all__ = ["BalancedOffload", "Component", "Unit", "apply", "build_units", "stats", "usable_bytes"]


def usable_bytes(device: torch.device, usable_gib: float | None = None) -> int:
    """Usable memory of ``device``: ``usable_gib`` if given, else the per-process cap
    (`torch.cuda.set_per_process_memory_fraction`), else the whole card."""
    if usable_gib:
        return int(usable_gib * GIB)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = 1.0
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if getter is not None:
        fraction = float(getter(device))
    return int(total * fraction)


def apply(pipe, options: dict, device: torch.device, engine=None) -> dict:
    """Install balanced offload on every nn.Module component of ``pipe``; return its description.
    ``engine`` (the run's `engines.base.Engine`, or None) says which modules are quantized layers."""
    opts = check_options("balanced", options)
    components = {n: m for n, m in pipe.components.items() if isinstance(m, nn.Module)}
    manager = BalancedOffload(device, usable_bytes(device, opts["usable_gib"]), opts["high_watermark"],
                              opts["low_watermark"], opts["pin_memory"], max_fill=opts["max_fill"],
                              release_cache=opts["release_cache"], eviction=opts["eviction"], engine=engine)
    manager.install(components)
    pipe._balanced_offload = manager
    return manager.report()


def stats(pipe) -> dict:
    """The offloader's placement and traffic, or {} when ``pipe`` has no balanced offload."""
    manager = getattr(pipe, "_balanced_offload", None)
    return manager.stats() if manager is not None else {}
