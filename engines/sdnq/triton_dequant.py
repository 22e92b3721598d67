"""Triton kernel for the weight-only path: quantized codes -> the compute dtype, one pass over memory.

This kernel works on whole groups: a program loads ``BLOCK_G`` groups' scales once and their
codes as one ``[BLOCK_G, GROUP]`` tile, so there is no per-element index arithmetic beyond the tile and
every load is contiguous. A group size that is not a power of two (SDXL's 320 / 640 / 1280-wide layers
get groups of 320, 640 and 480) is padded to the next power of two and masked.

Covers one-byte codes - int8, uint8, and float8_e4m3fn / float8_e5m2 (the stored bits reinterpreted in
the kernel; GPUs of compute capability 8.9 and up) - with any group size up to `TILE`, and bit-packed
4-bit codes (int4, uint4: two codes per byte, low nibble first - `pack.pack_bits`'s layout) with a
power-of-two group size. Other types and layouts use `quantize.dequantize_2d`. The arithmetic is fp32
(``q * scale (+ zero)``) with one rounding to the output dtype, which is what the torch path computes for
bf16 scales and a bf16 output.

A layer that falls back to the torch.compile'd function pays dynamo's guard checks at every call from
eager code, so covering the common layouts here matters for small layers as much as for bandwidth
(measurements: reports/h200/README.md).
Exposed as the custom op ``sdnq::dequantize_groups`` so torch.compile keeps it as one opaque call.
"""
from __future__ import annotations

import functools
import os

import torch

from engines.sdnq.dtypes import weight_type

#: "auto" (this kernel on CUDA where it applies) or "torch" (always `quantize.dequantize_2d`).
BACKEND = os.environ.get("SDNQ_DEQUANT_BACKEND", "auto")
MODE_BYTE, MODE_NIBBLE, MODE_E4M3, MODE_E5M2 = 0, 1, 2, 3
_FLOAT_MODES = {"float8_e4m3fn": MODE_E4M3, "float8_e5m2": MODE_E5M2}
TILE = 8192  # codes per program
NUM_WARPS = 4
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


@functools.lru_cache(maxsize=None)
def _capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def supports(wtype: str, group_size: int, device: torch.device | None = None) -> bool:
    """Whether the kernel handles this weight type and group size (on ``device``: float8 codes need
    compute capability 8.9 or newer for Triton's float8 conversions)."""
    wt = weight_type(wtype)
    if wt.kind == "float":
        if wtype not in _FLOAT_MODES:
            return False  # the fnuz formats: AMD's, not decoded here
        if device is not None and device.type == "cuda" and _capability(device.index) < (8, 9):
            return False
    elif wt.bits == 4:
        return 2 <= group_size <= TILE and group_size & (group_size - 1) == 0
    elif wt.bits != 8:
        return False
    return 1 <= group_size and _pow2(group_size) <= TILE


def enabled(device: torch.device) -> bool:
    return BACKEND != "torch" and device.type == "cuda" and _triton_ok()


def _kernel():
    """The launcher ``launch(data, scale, zero, out, qmin, group, mode)`` (fills and returns ``out``)."""
    global _KERNEL, RAW_KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton

    from engines.sdnq.triton_kernels import dequant_kernel

    RAW_KERNEL = dequant_kernel

    def launch(data, scale, zero, out, qmin: int, group: int, mode: int):
        n_groups = scale.numel()
        width = _pow2(group)
        block_g = max(1, TILE // width)
        grid = (triton.cdiv(n_groups, block_g),)
        dequant_kernel[grid](data, scale, zero if zero is not None else scale, out, n_groups, QMIN=qmin,
                             GROUP=group, GROUP_P2=width, BLOCK_G=block_g, MODE=mode, HAS_ZERO=zero is not None,
                             num_warps=NUM_WARPS)
        return out

    _KERNEL = launch
    return _KERNEL


def kernel_args(wtype: str) -> tuple[int, int]:
    """(mode, qmin) for the kernel: the stored code plus qmin is the signed value (packed int4 is stored
    offset by -qmin; int8 is stored signed; float8 bits are decoded by the kernel)."""
    wt = weight_type(wtype)
    if wt.kind == "float":
        return _FLOAT_MODES[wtype], 0
    if wt.bits == 4:
        return MODE_NIBBLE, wt.qmin if wt.kind == "int" else 0
    return MODE_BYTE, 0


def _run(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int, group: int, mode: int,
         out_dtype: torch.dtype) -> torch.Tensor:
    rows, groups = scale.shape
    out = torch.empty(rows, groups * group, dtype=out_dtype, device=scale.device)
    return _kernel()(data.contiguous(), scale.contiguous(), None if zero is None else zero.contiguous(), out,
                     qmin, group, mode)


@torch.library.custom_op("sdnq::dequantize_groups", mutates_args=())
def _dequantize_groups(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int,
                       group: int, mode: int, out_dtype: torch.dtype) -> torch.Tensor:
    return _run(data, scale, zero, qmin, group, mode, out_dtype)


@_dequantize_groups.register_fake
def _(data, scale, zero, qmin, group, mode, out_dtype):
    rows, groups = scale.shape
    return scale.new_empty(rows, groups * group, dtype=out_dtype)


def dequantize(data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, wtype: str, group_size: int,
               out_dtype: torch.dtype) -> torch.Tensor:
    """The weight as ``[rows, K]`` in ``out_dtype`` (``supports(wtype, group_size)`` must hold).

    Under torch.compile this is the custom op (one opaque node); in eager code the kernel is launched
    directly, because the custom op's dispatch costs several microseconds a call, which SDXL's ~800
    quantized layers per UNet forward would pay when the CPU, not the GPU, sets the pace."""
    mode, qmin = kernel_args(wtype)
    if torch.compiler.is_compiling():
        return _dequantize_groups(data, scale, zero, qmin, group_size, mode, out_dtype)
    return _run(data, scale, zero, qmin, group_size, mode, out_dtype)
