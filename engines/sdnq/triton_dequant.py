"""Triton kernel for the weight-only path: quantized codes -> the compute dtype, one pass over memory.

Why: on the H200 the torch.compile'd `quantize.dequantize_2d` (dynamic shapes) spent 48 ms per FLUX.1-dev
forward on int8 dequantization - ~0.7 TB/s, a seventh of the card's bandwidth (scripts/bench_sdnq.py
--profile). This kernel works on whole groups: a program loads ``BLOCK_G`` groups' scales once and their
codes as one ``[BLOCK_G, GROUP]`` tile (``GROUP`` a compile-time power of two), so there is no per-element
index arithmetic beyond the tile and every load is contiguous.

Covers int8 / uint8 codes and bit-packed 4-bit codes (int4, uint4: two codes per byte, low nibble first -
`pack.pack_bits`'s layout) with a power-of-two group size; other types and layouts use
`quantize.dequantize_2d`. The arithmetic is fp32 (``q * scale (+ zero)``) with one rounding to the output
dtype, which is what the torch path computes for bf16 scales and a bf16 output.
Exposed as the custom op ``sdnq::dequantize_groups`` so torch.compile keeps it as one opaque call.
"""
from __future__ import annotations

import functools
import os

import torch

from engines.sdnq.dtypes import weight_type

#: "auto" (this kernel on CUDA where it applies) or "torch" (always `quantize.dequantize_2d`).
BACKEND = os.environ.get("SDNQ_DEQUANT_BACKEND", "auto")
MODE_BYTE, MODE_NIBBLE = 0, 1
TILE = 8192  # codes per program
RAW_KERNEL = None
_KERNEL = None


@functools.lru_cache(maxsize=None)
def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def supports(wtype: str, group_size: int) -> bool:
    """Whether the kernel handles this weight type and group size."""
    wt = weight_type(wtype)
    if wt.kind == "float" or wt.bits not in (4, 8):
        return False
    return group_size >= 2 and group_size & (group_size - 1) == 0 and group_size <= TILE


def enabled(device: torch.device) -> bool:
    return BACKEND != "torch" and device.type == "cuda" and _triton_ok()


def _kernel():
    global _KERNEL, RAW_KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def dequant_kernel(q_ptr, s_ptr, z_ptr, out_ptr, n_groups, QMIN: tl.constexpr, GROUP: tl.constexpr,
                       BLOCK_G: tl.constexpr, MODE: tl.constexpr, HAS_ZERO: tl.constexpr):
        g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
        gmask = g < n_groups
        s = tl.load(s_ptr + g, mask=gmask, other=0).to(tl.float32)
        if MODE == 1:  # two 4-bit codes per byte, low nibble = even code
            half = tl.arange(0, GROUP // 2)
            b = tl.load(q_ptr + g[:, None] * (GROUP // 2) + half[None, :], mask=gmask[:, None], other=0)
            b = b.to(tl.int32)
            q = tl.interleave(b & 15, b >> 4).to(tl.float32)
        else:
            e = tl.arange(0, GROUP)
            q = tl.load(q_ptr + g[:, None] * GROUP + e[None, :], mask=gmask[:, None], other=0).to(tl.float32)
        q = q + QMIN
        if HAS_ZERO:
            z = tl.load(z_ptr + g, mask=gmask, other=0).to(tl.float32)
            w = q * s[:, None] + z[:, None]
        else:
            w = q * s[:, None]
        e_out = tl.arange(0, GROUP)
        tl.store(out_ptr + g[:, None] * GROUP + e_out[None, :], w.to(out_ptr.dtype.element_ty),
                 mask=gmask[:, None])

    RAW_KERNEL = dequant_kernel

    def launch(data, scale, zero, out, qmin: int, group: int, mode: int):
        n_groups = scale.numel()
        block_g = max(1, TILE // group)
        grid = (triton.cdiv(n_groups, block_g),)
        dequant_kernel[grid](data, scale, zero if zero is not None else scale, out, n_groups, QMIN=qmin,
                             GROUP=group, BLOCK_G=block_g, MODE=mode, HAS_ZERO=zero is not None)
        return out

    _KERNEL = launch
    return _KERNEL


def kernel_args(wtype: str) -> tuple[int, int]:
    """(mode, qmin) for the kernel: the stored code plus qmin is the signed value (packed int4 is stored
    offset by -qmin; int8 is stored signed)."""
    wt = weight_type(wtype)
    if wt.bits == 4:
        return MODE_NIBBLE, wt.qmin if wt.kind == "int" else 0
    return MODE_BYTE, 0


@torch.library.custom_op("sdnq::dequantize_groups", mutates_args=())
def _dequantize_groups(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int,
                       group: int, mode: int, out_dtype: torch.dtype) -> torch.Tensor:
    rows, groups = scale.shape
    out = torch.empty(rows, groups * group, dtype=out_dtype, device=scale.device)
    return _kernel()(data.contiguous(), scale.contiguous(), None if zero is None else zero.contiguous(), out,
                     qmin, group, mode)


@_dequantize_groups.register_fake
def _(data, scale, zero, qmin, group, mode, out_dtype):
    rows, groups = scale.shape
    return scale.new_empty(rows, groups * group, dtype=out_dtype)


def dequantize(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, wtype: str, group_size: int,
               out_dtype: torch.dtype) -> torch.Tensor:
    """The weight as ``[rows, K]`` in ``out_dtype`` (``supports(wtype, group_size)`` must hold)."""
    mode, qmin = kernel_args(wtype)
    return _dequantize_groups(data, scale, zero, qmin, group_size, mode, out_dtype)
