"""Quantize a weight tensor to an SDNQ type and dequantize it back.

A weight of shape ``[rows, *rest]`` (Linear ``[out, in]``, Conv ``[out, in/groups, kh, kw]``) is
viewed as ``[rows, K]`` with ``K = prod(rest)`` and split along K into groups of ``group_size``
values; each (row, group) has its own scale (and zero point for uint types).

* int B (symmetric): ``scale = amax / (2**(B-1) - 1)``, ``q = round(w / scale)``, ``w ~ q * scale``.
* uint B (asymmetric): ``zero = min``, ``scale = (max - zero) / (2**B - 1)``,
  ``q = round((w - zero) / scale)``, ``w ~ q * scale + zero``.
* float8: ``scale = amax / finfo.max``, ``q = float8(w / scale)``, ``w ~ q * scale``.

Scales and zero points are stored in ``scale_dtype`` (bf16 by default), rounded to nearest *before*
the codes are computed, so the stored scale is exactly the one used. Rounding to nearest (not up) gives
the smallest error on average; the price is that a group's extreme value can land just past the top
code and is clamped there, an extra error of at most ``qmax * scale * 2**-9`` for bf16 scales (a quarter
of a step for int8, half a step for uint8). Every other value is within ``scale / 2`` (plus the output
dtype's rounding of the dequantized value). Measured against SD.Next's public package on the same
tensors: reports/sdnq_vs_public/.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engines.sdnq.dtypes import WeightType, weight_type
from engines.sdnq.pack import pack_bits, unpack_bits

#: Groups smaller than this (from an awkward input dimension) are not worth their scales.
MIN_GROUP = 8


def auto_group_size(bits: int, is_conv: bool) -> int:
    """SD.Next's automatic group size: linear ``2**(2+bits)``, convolution ``2**(1+bits)``."""
    return 2 ** ((1 if is_conv else 2) + bits)


def resolve_group_size(requested: int, bits: int, k: int, is_conv: bool = False) -> int:
    """The group size really used along an input dimension of ``k`` values.

    ``0`` -> automatic size; ``-1`` -> one group per output row (returns ``k``); a positive size
    that does not divide ``k`` is replaced by the largest divisor of ``k`` not above it, and when
    that divisor is below ``min(requested, 8)`` (a prime or tiny ``k``) grouping is dropped (``k``).
    A size at or above ``k`` is ``k``.
    """
    if requested == 0:
        requested = auto_group_size(bits, is_conv)
    if requested < 0 or requested >= k:
        return k
    divisor = max(d for d in range(1, requested + 1) if k % d == 0)
    return k if divisor < min(requested, MIN_GROUP) else divisor


@dataclass
class QuantizedWeight:
    """Stored form of one weight. ``data`` is int8 ``[rows, K]`` for int8, uint8 ``[rows, K]`` for
    uint8 and float8 (the float8 bits viewed as uint8), and flat packed uint8 for sub-byte types.
    ``scale`` / ``zero_point`` are ``[rows, K // group_size]``."""
    data: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    weight_type: str
    shape: tuple[int, ...]
    group_size: int

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int:
        return math.prod(self.shape[1:])

    def dequantize(self, dtype: torch.dtype = torch.bfloat16, fp32: bool = False) -> torch.Tensor:
        return dequantize(self.data, self.scale, self.zero_point, weight_type(self.weight_type),
                          self.shape, self.group_size, dtype, fp32)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.zero_point)
                   if t is not None)


def quantize_weight(weight: torch.Tensor, wtype: str, group_size: int = 0, is_conv: bool = False,
                    scale_dtype: torch.dtype = torch.bfloat16) -> QuantizedWeight:
    """Quantize ``weight`` on its own device. ``group_size`` follows `resolve_group_size`."""
    wt = weight_type(wtype)
    if wt.kind == "float" and wt.torch_float8 is None:
        raise TypeError(f"this torch ({torch.__version__}) has no {wtype}")
    shape = tuple(weight.shape)
    rows, k = shape[0], math.prod(shape[1:])
    gs = resolve_group_size(group_size, wt.bits, k, is_conv)
    w = weight.detach().reshape(rows, k // gs, gs).float()
    zero = None
    if wt.kind == "uint":
        lo, hi = w.amin(-1), w.amax(-1)
        zero = lo.to(scale_dtype)
        scale = ((hi - zero.float()).clamp_min(0) / wt.qmax).to(scale_dtype)  # round to nearest
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = ((w - zero.float().unsqueeze(-1)) / scale.float().unsqueeze(-1)).round_().clamp_(0, wt.qmax)
        codes = q.to(torch.uint8)
    else:
        top = wt.float_max if wt.kind == "float" else wt.qmax
        scale = (w.abs().amax(-1) / top).to(scale_dtype)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = (w / scale.float().unsqueeze(-1)).clamp_(-top, top)
        if wt.kind == "float":
            codes = q.to(wt.torch_float8).view(torch.uint8)
        else:
            q = q.round_().clamp_(wt.qmin, wt.qmax)
            codes = q.to(torch.int8) if wt.bits == 8 else (q - wt.qmin).to(torch.uint8)
    del w, q
    if wt.packed:
        data = pack_bits(codes, wt.bits)
    else:
        data = codes.reshape(rows, k).contiguous()
    return QuantizedWeight(data, scale.contiguous(), None if zero is None else zero.contiguous(),
                           wtype, shape, gs)


def dequantize(data: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               wt: WeightType, shape: tuple[int, ...], group_size: int,
               dtype: torch.dtype = torch.bfloat16, fp32: bool = False) -> torch.Tensor:
    """Rebuild the weight of ``shape`` in ``dtype`` (see `dequantize_2d`)."""
    return dequantize_2d(data, scale, zero_point, wt.name, group_size, dtype, fp32).reshape(shape)


def dequantize_2d(data: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                  wtype: str, group_size: int, dtype: torch.dtype = torch.bfloat16,
                  fp32: bool = False) -> torch.Tensor:
    """The weight as ``[rows, K]`` in ``dtype``; rows and K come from the tensors' shapes, so
    torch.compile(dynamic=True) serves every layer of one type with a single graph. The arithmetic
    runs in the scale's dtype, or in fp32 when ``fp32`` (the ``dequantize_fp32`` option)."""
    wt = weight_type(wtype)
    rows, groups = scale.shape
    math_dtype = torch.float32 if fp32 else scale.dtype
    if wt.kind == "float":
        q = data.view(wt.torch_float8).to(math_dtype)
    elif wt.packed:
        q = unpack_bits(data, wt.bits, rows * groups * group_size).to(math_dtype)
        if wt.kind == "int":
            q = q + wt.qmin
    else:
        q = data.to(math_dtype)
    q = q.reshape(rows, groups, group_size)
    s = scale.to(math_dtype).unsqueeze(-1)
    if zero_point is not None:
        w = torch.addcmul(zero_point.to(math_dtype).unsqueeze(-1), q, s)
    else:
        w = q * s
    return w.to(dtype).reshape(rows, groups * group_size)
