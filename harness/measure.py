"""Timers and memory probes, with the definitions of README's record table (`harness.record`).

GPU memory: `torch.cuda.memory_allocated` / `max_memory_allocated` / `max_memory_reserved`.
Host memory: resident set size from /proc (VmRSS, and VmHWM for the peak, which `reset_host_peak`
resets through /proc/self/clear_refs so a peak belongs to one phase).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import psutil
import torch

GIB = 2**30


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_rss_gib() -> float:
    return psutil.Process().memory_info().rss / GIB


def host_peak_rss_gib() -> float:
    """Peak RSS of this process since start or the last `reset_host_peak` (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return host_rss_gib()


def reset_host_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


#: CUDA allocator peaks (allocated, reserved) that `restart_peak` folded in before resetting them, per device.
_FOLDED: dict[torch.device, tuple[int, int]] = {}
#: How many times `MemoryProbe.reset_peak` has run in this process (a measurement spanning one is void).
RESETS = [0]


def _key(device) -> torch.device:
    device = torch.device(device)
    return torch.device(device.type, device.index if device.index is not None else torch.cuda.current_device())


def restart_peak(device) -> None:
    """Start a fresh allocator peak on a CUDA ``device`` for a measurement inside a run (balanced offload's
    working memory per forward), keeping the run's: `MemoryProbe` reports the larger of the two."""
    key = _key(device)
    alloc, reserved = _FOLDED.get(key, (0, 0))
    _FOLDED[key] = (max(alloc, torch.cuda.max_memory_allocated(device)),
                    max(reserved, torch.cuda.max_memory_reserved(device)))
    torch.cuda.reset_peak_memory_stats(device)


def peak_allocated(device) -> int:
    """Bytes: the allocator's peak on ``device`` since `MemoryProbe.reset_peak`, across `restart_peak`s."""
    return max(torch.cuda.max_memory_allocated(device), _FOLDED.get(_key(device), (0, 0))[0])


def peak_reserved(device) -> int:
    return max(torch.cuda.max_memory_reserved(device), _FOLDED.get(_key(device), (0, 0))[1])


class MemoryProbe:
    """Memory figures for one device: CUDA counters on a GPU, host RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def reset_peak(self) -> None:
        if self.cuda:
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            _FOLDED.pop(_key(self.device), None)
        RESETS[0] += 1
        reset_host_peak()

    def current(self) -> dict[str, float]:
        if self.cuda:
            sync(self.device)
            return {"allocated_gib": torch.cuda.memory_allocated(self.device) / GIB,
                    "reserved_gib": torch.cuda.memory_reserved(self.device) / GIB,
                    "max_reserved_gib": peak_reserved(self.device) / GIB}
        rss = host_rss_gib()
        return {"allocated_gib": rss, "reserved_gib": rss, "max_reserved_gib": host_peak_rss_gib()}

    def peak(self) -> dict[str, float]:
        if self.cuda:
            sync(self.device)
            return {"peak_allocated_gib": peak_allocated(self.device) / GIB,
                    "peak_reserved_gib": peak_reserved(self.device) / GIB}
        peak = host_peak_rss_gib()
        return {"peak_allocated_gib": peak, "peak_reserved_gib": peak}


class StepClock:
    """A diffusers ``callback_on_step_end`` that timestamps (synchronized) the end of every step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = 0.0
        self.stamps: list[float] = []

    def begin(self) -> None:
        sync(self.device)
        self.stamps = []
        self.start = time.perf_counter()

    def __call__(self, pipe, step, timestep, callback_kwargs):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return callback_kwargs

    def step_intervals(self) -> list[float]:
        """Pure denoising step durations: between successive step ends (the first step also holds
        text encoding and set-up, so it is only used when there is a single step)."""
        if len(self.stamps) >= 2:
            return [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return [self.stamps[0] - self.start] if self.stamps else []


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


#: Fewer values than this give no spread: three is the least that has a minimum, a median and a maximum apart.
SPREAD_MIN_VALUES = 3


def spread(values: list[float]) -> dict | None:
    """The spread of ``values`` (one figure per timed call): ``n``, ``min``, ``q1``, ``median``, ``q3``, ``max``
    and ``iqr`` (= q3 - q1). The values are a sample of the cell's run-to-run scatter, so the quartiles are
    estimated as for a sample (``statistics.quantiles``' default "exclusive" method: the i-th of n sorted values
    stands at i / (n + 1)); for three values q1 and q3 are the minimum and the maximum. None for fewer than
    `SPREAD_MIN_VALUES` values."""
    if len(values) < SPREAD_MIN_VALUES:
        return None
    q1, mid, q3 = statistics.quantiles(values, n=4)
    return {"n": len(values), "min": min(values), "q1": q1, "median": mid, "q3": q3, "max": max(values),
            "iqr": q3 - q1}
