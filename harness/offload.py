"""Offload modes: where a pipeline's modules live between and during forwards.

none: everything on the accelerator. model / sequential: diffusers' model and sequential CPU offload.
group: diffusers group offloading (block or leaf level, optional CUDA streams) for every component.
balanced: the in-house re-implementation of SD.Next's balanced offload (`harness.balanced`).
Offload needs an accelerator: on a CPU-only run it is `Unsupported`.
"""
from __future__ import annotations

import torch

from engines.base import Unsupported


def check(name: str, device: torch.device) -> None:
    if name != "none" and device.type != "cuda":
        raise Unsupported(f"offload={name} needs a CUDA accelerator; this run's device is {device.type}")


def apply(pipe, name: str, options: dict, device: torch.device) -> dict:
    """Install offload mode ``name``; return a description of what it did."""
    check(name, device)
    if name == "none":
        return {"mode": "none"}
    if name == "model":
        pipe.enable_model_cpu_offload(device=device)
        return {"mode": "model", "unit": "component"}
    if name == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
        return {"mode": "sequential", "unit": "leaf module"}
    if name == "group":
        from diffusers.hooks import apply_group_offloading

        kwargs = {"offload_type": options.get("offload_type", "block_level"),
                  "use_stream": bool(options.get("use_stream", False))}
        if kwargs["offload_type"] == "block_level":
            kwargs["num_blocks_per_group"] = int(options.get("num_blocks_per_group", 1))
        for comp_name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module):
                apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"), **kwargs)
        return {"mode": "group", **kwargs}
    if name == "balanced":
        from harness import balanced

        return balanced.apply(pipe, options, device)
    raise ValueError(f"unknown offload mode {name!r}")


def stats(pipe) -> dict:
    """What the offloader did during generation (placement, moves, bytes moved), merged into the
    record's offload_report after generation; {} for modes that keep no books (none/model/sequential/group)."""
    from harness import balanced

    return balanced.stats(pipe)
