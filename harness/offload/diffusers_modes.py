"""The offload modes diffusers implements: model and sequential CPU offload, and group offloading."""
from __future__ import annotations

import torch


def model(pipe, options: dict, device: torch.device, engine=None) -> dict:
    """One whole component on the GPU at a time (`enable_model_cpu_offload`)."""
    pipe.enable_model_cpu_offload(device=device)
    return {"mode": "model", "unit": "component"}


def sequential(pipe, options: dict, device: torch.device, engine=None) -> dict:
    """Every leaf module moved onto the GPU for its own forward (`enable_sequential_cpu_offload`)."""
    pipe.enable_sequential_cpu_offload(device=device)
    return {"mode": "sequential", "unit": "leaf module"}


def group(pipe, options: dict, device: torch.device, engine=None) -> dict:
    """`diffusers.hooks.apply_group_offloading` on every nn.Module component (options: `GroupOptions`)."""
    from diffusers.hooks import apply_group_offloading

    kwargs = {"offload_type": options["offload_type"], "use_stream": options["use_stream"]}
    if kwargs["offload_type"] == "block_level":
        kwargs["num_blocks_per_group"] = options["num_blocks_per_group"]
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"), **kwargs)
    return {"mode": "group", **kwargs}
