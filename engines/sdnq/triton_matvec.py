"""A linear layer with a few input rows, computed straight from the quantized codes (Triton).

Why: FLUX's modulation layers (``norm1.linear``, ``norm1_context.linear``, ``norm.linear``,
``norm_out.linear``) take one row - the timestep embedding - yet hold 3.25 of the transformer's 11.9
billion weights. With one row a linear is a pass over its weight. Dequantize-then-``F.linear`` reads the
codes, writes a BF16 copy and reads it back (int8: 1 + 2 + 2 bytes a weight); this kernel reads the codes
once (1 byte, half for 4-bit), which is less traffic than BF16's own 2 bytes.

Applies to the layouts `triton_dequant.supports` accepts, for inputs of at most `MAX_ROWS` rows (above
that the weight is re-read per row and a GEMM on the dequantized weight wins). The sums are fp32 from the
exact dequantized values (``code * scale (+ zero)`` is not rounded to BF16 first), so results differ from
the dequantize path by fp32 summation order and that one rounding.
"""
from __future__ import annotations

import torch

from engines.sdnq import triton_dequant

#: Inputs with more rows than this go through dequantize + F.linear.
MAX_ROWS = 4
#: Codes a program reads per row and step, output rows per program, warps (chosen with
#: scripts/bench_sdnq_kernels.py; measurements in reports/h200/README.md).
CHUNK = 1024
BLOCK_N = 8
NUM_WARPS = 8
RAW_KERNEL = None


def applies(x: torch.Tensor, wtype: str, group_size: int, in_features: int) -> bool:
    """Whether this kernel computes ``F.linear(x, w)`` for a ``[*, in_features]`` weight of this layout
    (CUDA is checked by the caller through `triton_dequant.enabled`). A mismatched input is left to
    F.linear, which raises the usual shape error."""
    if x.dim() == 0 or x.shape[-1] != in_features or in_features == 0:
        return False
    return 1 <= x.numel() // in_features <= MAX_ROWS and triton_dequant.supports(wtype, group_size, x.device)


def _launch(x2, data, scale, zero, bias, out, qmin: int, group: int, mode: int):
    global RAW_KERNEL
    import triton

    from engines.sdnq.triton_kernels import matvec_kernel

    RAW_KERNEL = matvec_kernel
    rows, n_groups = scale.shape
    width = triton_dequant._pow2(group)
    block_g = max(1, CHUNK // width)
    grid = (triton.cdiv(rows, BLOCK_N), x2.shape[0])
    matvec_kernel[grid](x2, data, scale, scale if zero is None else zero, scale if bias is None else bias, out,
                        rows, n_groups, x2.stride(0), out.stride(0), QMIN=qmin, GROUP=group, GROUP_P2=width,
                        BLOCK_N=BLOCK_N, BLOCK_G=block_g, MODE=mode, HAS_ZERO=zero is not None,
                        HAS_BIAS=bias is not None, num_warps=NUM_WARPS)
    return out


def _run(x, data, scale, zero, bias, qmin: int, group: int, mode: int) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty(x2.shape[0], scale.shape[0], dtype=x.dtype, device=x.device)
    _launch(x2, data.contiguous(), scale.contiguous(), None if zero is None else zero.contiguous(),
            None if bias is None else bias.contiguous(), out, qmin, group, mode)
    return out.reshape(*x.shape[:-1], scale.shape[0])


@torch.library.custom_op("sdnq::few_row_linear", mutates_args=())
def _few_row_linear(x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                    bias: torch.Tensor | None, qmin: int, group: int, mode: int) -> torch.Tensor:
    return _run(x, data, scale, zero, bias, qmin, group, mode)


@_few_row_linear.register_fake
def _(x, data, scale, zero, bias, qmin, group, mode):
    return x.new_empty(*x.shape[:-1], scale.shape[0])


def linear(x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
           bias: torch.Tensor | None, wtype: str, group_size: int) -> torch.Tensor:
    """``F.linear(x, dequantize(...), bias)`` in ``x``'s dtype (``applies`` must hold). Like
    `triton_dequant.dequantize`: the custom op under torch.compile, a direct launch in eager code."""
    mode, qmin = triton_dequant.kernel_args(wtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    if torch.compiler.is_compiling():
        return _few_row_linear(x, data, scale, zero, bias, qmin, group_size, mode)
    return _run(x, data, scale, zero, bias, qmin, group_size, mode)
