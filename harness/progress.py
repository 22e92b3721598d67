"""Where a running cell is: the stage it last entered, told to the process that supervises it.

A timeout, a crash or an out-of-memory kill leaves no traceback; the last stage says where the cell was
(loading, the first call that compiles, the third denoising step of a timed call). `harness.isolate`
connects a sink in the child; anywhere else ``stage`` does nothing.
"""
from __future__ import annotations

from typing import Callable

_sink: Callable[[str], None] | None = None


def connect(sink: Callable[[str], None] | None) -> None:
    """Send every stage to ``sink`` from now on (None disconnects)."""
    global _sink
    _sink = sink


def stage(name: str) -> None:
    """Enter stage ``name``. Costs one small pipe write when connected; never raises."""
    if _sink is not None:
        try:
            _sink(name)
        except (OSError, ValueError):  # the supervisor has gone away: the cell's result is moot anyway
            pass

