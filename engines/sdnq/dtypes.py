"""SDNQ weight types: what each name stores and the integer/float range it uses.

Symmetric ``intB`` types keep values in ``-2**(B-1) .. 2**(B-1)-1`` with one scale per group
(no zero point); asymmetric ``uintB`` types keep ``0 .. 2**B-1`` with a scale and a zero point
per group; ``float8_*`` types store the weight divided by a scale that maps the group's
absolute maximum onto the format's largest finite value.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WeightType:
    name: str
    kind: str  # "int" (symmetric), "uint" (asymmetric) or "float"
    bits: int

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.kind == "int" else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.kind == "int" else 2 ** self.bits - 1

    @property
    def packed(self) -> bool:
        """Sub-byte integer types are bit-packed into uint8 storage."""
        return self.kind != "float" and self.bits < 8

    @property
    def torch_float8(self) -> torch.dtype | None:
        """The torch float8 dtype, None for integer types or a torch that lacks it."""
        return getattr(torch, self.name, None) if self.kind == "float" else None

    @property
    def float_max(self) -> float:
        return float(torch.finfo(self.torch_float8).max)

    @property
    def symmetric(self) -> bool:
        return self.kind != "uint"


INT_TYPES = tuple(f"int{b}" for b in range(8, 1, -1))
UINT_TYPES = tuple(f"uint{b}" for b in range(8, 0, -1))
FLOAT8_TYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
ALL_TYPES = INT_TYPES + UINT_TYPES + FLOAT8_TYPES

#: float8 types torch._scaled_mm can multiply (the fnuz formats are AMD-only and not used here).
MATMUL_FLOAT8 = ("float8_e4m3fn", "float8_e5m2")


def _make(name: str) -> WeightType:
    if name in INT_TYPES:
        return WeightType(name, "int", int(name[3:]))
    if name in UINT_TYPES:
        return WeightType(name, "uint", int(name[4:]))
    return WeightType(name, "float", 8)


# One instance per type (plain dict: cheap to look up inside torch.compile'd code).
_TYPES = {name: _make(name) for name in ALL_TYPES}


def weight_type(name: str) -> WeightType:
    try:
        return _TYPES[name]
    except KeyError:
        raise ValueError(f"unknown SDNQ weight type '{name}'; valid: {', '.join(ALL_TYPES)}") from None


def conv_weight_type(name: str) -> str:
    """Convolutions below 4 bits are stored as uint4 (SD.Next's documented behaviour)."""
    wt = weight_type(name)
    return "uint4" if wt.kind != "float" and wt.bits < 4 else name


def supports_quantized_matmul(name: str) -> bool:
    """INT8 matmul serves symmetric int types, FP8 matmul float8_e4m3fn / float8_e5m2."""
    wt = weight_type(name)
    return wt.kind == "int" or name in MATMUL_FLOAT8
