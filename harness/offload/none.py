"""offload=none: every module stays where loading put it (on the accelerator)."""
from __future__ import annotations

import torch


def apply(pipe, options: dict, device: torch.device, engine=None) -> dict:
    return {"mode": "none"}
