"""Balanced offload's placement decisions, pure: which layers go on the GPU, which components leave it."""
from __future__ import annotations

from typing import Sequence


def plan(sizes: Sequence[int], budget: int, required: Sequence[bool] | None = None) -> list[bool]:
    """Which units to keep on the GPU: first fit in order under ``budget`` bytes.

    Units are taken in module (execution) order; a unit that does not fit is streamed and the next
    ones are still tried, so small layers fill what is left. ``required`` units are placed whatever
    the budget (and count against it). Returns one flag per unit: True = resident, False = streamed.
    """
    required = list(required) if required is not None else [False] * len(sizes)
    if len(required) != len(sizes):
        raise ValueError("plan: sizes and required differ in length")
    if any(s < 0 for s in sizes):
        raise ValueError("plan: unit sizes must be >= 0")
    left = budget - sum(s for s, r in zip(sizes, required) if r)
    out = []
    for size, req in zip(sizes, required):
        if req:
            out.append(True)
        elif size <= left:
            out.append(True)
            left -= size
        else:
            out.append(False)
    return out


def evictions(placed: Sequence[tuple[str, int]], used: int, low: int) -> list[str]:
    """Idle components to move back to the CPU, least recently used first, while ``used`` bytes are
    above ``low``. ``placed`` is (name, bytes on the GPU), least recently used first."""
    out = []
    for name, nbytes in placed:
        if used <= low:
            break
        out.append(name)
        used -= nbytes
    return out
