"""Quantized matmul: activations quantized per token on the fly, integer/FP8 GEMM, scales after.

INT8 (symmetric int weights, any bit width: codes are widened to int8):
    x[M,K] -> int8 with one fp32 scale per row (amax / 127), ``int8 x int8 -> int32``, then
    ``out = acc * x_scale[:, None] * w_scale[None, :] + bias``.
    The GEMM is the Triton kernel of `engines.sdnq.triton_int8` on CUDA when Triton is present
    (scales and bias fused in its epilogue), else ``torch._int_mm`` (CUDA and CPU: exact int32).
FP8 (float8_e4m3fn / float8_e5m2 weights):
    x -> float8_e4m3fn with a per-row scale (amax / 448); on CUDA ``torch._scaled_mm`` with row-wise
    fp32 scales (needs sm_89+). On CPU a documented emulation: the float8 codes are widened to fp32
    and multiplied in fp32 - the same products and fp32 accumulation as the GPU kernel (sums may
    differ only in order) - so results match the hardware path to rounding, never silently differ.

Weights are per output channel (group size -1) in this mode.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from engines.sdnq.dtypes import weight_type
from engines.sdnq.pack import unpack_bits

#: "auto" (Triton on CUDA when available, else torch._int_mm), "triton" or "torch".
INT8_BACKEND = os.environ.get("SDNQ_INT8_BACKEND", "auto")
FP8_ACT = torch.float8_e4m3fn
#: torch._scaled_mm's ``use_fast_accum``: Hopper's FP8 tensor cores accumulate in reduced precision between
#: periodic promotions to fp32 (faster); False accumulates at full precision.
FP8_FAST_ACCUM = True
_warned: set[str] = set()


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: (codes [M,K] int8, scale [M,1] fp32)."""
    xf = x.float()
    scale = xf.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    return (xf / scale).round_().clamp_(-128, 127).to(torch.int8), scale


def quantize_rows_fp8(x: torch.Tensor, dtype: torch.dtype = FP8_ACT) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row float8: (codes [M,K], scale [M,1] fp32)."""
    top = torch.finfo(dtype).max
    xf = x.float()
    scale = xf.abs().amax(-1, keepdim=True).clamp_min(1e-12) / top
    return (xf / scale).clamp_(-top, top).to(dtype), scale


def int8_weight(layer) -> torch.Tensor:
    """The layer's codes as int8 ``[N, K]`` (sub-8-bit symmetric codes are unpacked and widened)."""
    wt = weight_type(layer.weight_type)
    n = layer.scale.shape[0]
    if wt.bits == 8:
        return layer.qweight.view(n, -1)
    k = layer.group_size * layer.scale.shape[1]
    codes = unpack_bits(layer.qweight, wt.bits, n * k).view(n, k)
    return (codes.to(torch.int16) + wt.qmin).to(torch.int8)


def int8_matmul(xq, x_scale, wq, w_scale, bias, out_dtype) -> torch.Tensor:
    """``(xq @ wq.T) * x_scale * w_scale.T + bias`` with int32 accumulation. xq [M,K], wq [N,K]."""
    if xq.is_cuda and INT8_BACKEND != "torch":
        from engines.sdnq import triton_int8
        if triton_int8.available():
            return triton_int8.int8_mm_scaled(xq, wq, x_scale, w_scale, bias, out_dtype)
        if INT8_BACKEND == "triton":
            raise RuntimeError("SDNQ_INT8_BACKEND=triton but Triton is not available")
    m = xq.shape[0]
    if xq.is_cuda and m <= 16:  # cuBLAS int8 GEMM needs M > 16
        xq = F.pad(xq, (0, 0, 0, 32 - m))
    acc = torch._int_mm(xq, wq.t())[:m]
    out = acc.float() * x_scale * w_scale.float().view(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fp8_matmul(xq, x_scale, wq, w_scale, bias, out_dtype) -> torch.Tensor:
    """Row-wise scaled FP8 GEMM. xq [M,K] float8_e4m3fn, wq [N,K] float8 (e4m3fn / e5m2)."""
    if xq.is_cuda:
        try:
            out = torch._scaled_mm(xq, wq.t(), scale_a=x_scale, scale_b=w_scale.float().view(1, -1),
                                   bias=bias.to(torch.bfloat16) if bias is not None else None,
                                   out_dtype=torch.bfloat16, use_fast_accum=FP8_FAST_ACCUM)
            return out.to(out_dtype)
        except RuntimeError as err:
            if torch.compiler.is_compiling():
                raise
            key = f"fp8:{wq.dtype}"
            if key not in _warned:  # e.g. a torch whose row-wise kernel lacks e4m3 x e5m2
                _warned.add(key)
                warnings.warn(f"torch._scaled_mm failed for {xq.dtype} x {wq.dtype} ({err}); "
                              f"SDNQ uses the exact fp32 emulation for this layer type")
    out = (xq.float() @ wq.float().t()) * x_scale * w_scale.float().view(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def _matmul_2d(layer, x2d: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    wt = weight_type(layer.weight_type)
    if wt.kind == "float":
        xq, xs = quantize_rows_fp8(x2d)
        wq = layer.qweight.view(wt.torch_float8)
        return fp8_matmul(xq, xs, wq, layer.scale, layer.bias, out_dtype)
    xq, xs = quantize_rows_int8(x2d)
    return int8_matmul(xq, xs, int8_weight(layer), layer.scale, layer.bias, out_dtype)


def quantized_linear(layer, x: torch.Tensor) -> torch.Tensor:
    """Forward of an `SDNQLinear` in quantized-matmul mode."""
    shape = x.shape
    out = _matmul_2d(layer, x.reshape(-1, shape[-1]), x.dtype)
    return out.view(*shape[:-1], out.shape[-1])


def quantized_conv2d(layer, x: torch.Tensor) -> torch.Tensor:
    """Forward of an `SDNQConv2d` in quantized-matmul mode: im2col (F.unfold) + GEMM (groups=1)."""
    padding = layer.padding
    if layer.padding_mode != "zeros":
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        padding = (0, 0)
    elif isinstance(padding, str):  # "same" / "valid"
        return layer._conv_forward(x, layer.dequantize_weight(x.dtype),
                                   None if layer.bias is None else layer.bias.to(x.dtype))
    n, _, h, w = x.shape
    kh, kw = layer.kernel_size
    ho = (h + 2 * padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    wo = (w + 2 * padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    if (kh, kw) == (1, 1) and layer.stride == (1, 1) and padding == (0, 0):
        cols = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
    else:
        cols = F.unfold(x, (kh, kw), layer.dilation, padding, layer.stride)
        cols = cols.transpose(1, 2).reshape(n * ho * wo, -1)
    out = _matmul_2d(layer, cols, x.dtype)
    return out.view(n, ho, wo, -1).permute(0, 3, 1, 2).contiguous()
