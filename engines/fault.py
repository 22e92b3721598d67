"""Fault injection, for testing isolation only: its dtype names the failure it causes while
quantizing. Registered as "fault" but hidden from listings and sweeps' choices."""
from __future__ import annotations

import ctypes
import time

import torch

from engines.base import Engine, Unsupported


class FaultEngine(Engine):
    name = "fault"
    dtypes = ("raise", "segfault", "hang", "oom", "unsupported")
    default_dtype = "raise"

    def quantize(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        if self.dtype == "raise":
            raise RuntimeError(f"injected failure while quantizing {name} (layer 7 of 42)")
        if self.dtype == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if self.dtype == "hang":
            while True:
                time.sleep(1)
        if self.dtype == "oom":
            hoard = []
            while True:  # grow until the allocator gives up (tests cap the address space first)
                hoard.append(torch.ones(2**27, dtype=torch.uint8))
        raise Unsupported("injected: this engine declares the combination unsupported")

    def count_quantized(self, module: torch.nn.Module) -> tuple[int, int]:
        return 0, 0
