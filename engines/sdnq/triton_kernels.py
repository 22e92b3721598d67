"""The Triton kernels of SDNQ's weight-only path. Imports Triton: import this module lazily
(`triton_dequant` and `triton_matvec` do, and only on CUDA).

Code layouts (see `quantize.QuantizedWeight`): one byte per code - int8 (signed), uint8, float8 bits -
row-major ``[rows, K]``; 4-bit codes packed two per byte, low nibble = even code, stored offset by
``-QMIN``. Group ``j`` of row ``n`` is codes ``[j * GROUP, (j + 1) * GROUP)`` of that row, with scale (and
zero point) ``[n, j]``. ``MODE``: 0 one-byte integer, 1 packed nibbles, 2 float8_e4m3fn bits,
3 float8_e5m2 bits (2 and 3 need compute capability 8.9+).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _codes(q_ptr, group_index, group_mask, lane, lane_mask, GROUP: tl.constexpr, MODE: tl.constexpr):
    """fp32 code values of the groups ``group_index`` (flat ``row * groups + j``; any shape ``S``) at
    ``lane`` (``arange(GROUP_P2)``, broadcastable to ``S + [GROUP_P2]``); groups outside ``group_mask``
    and lanes outside ``lane_mask`` read 0. Nibble mode needs ``GROUP`` a power of two (no padded lanes)
    and reads whole groups."""
    if MODE == 1:
        half = tl.arange(0, GROUP // 2)
        b = tl.load(q_ptr + tl.expand_dims(group_index, -1) * (GROUP // 2) + half, mask=tl.expand_dims(group_mask, -1),
                    other=0).to(tl.int32)
        return tl.interleave(b & 15, b >> 4).to(tl.float32)
    b = tl.load(q_ptr + tl.expand_dims(group_index, -1) * GROUP + lane, mask=lane_mask, other=0)
    if MODE == 2:
        return b.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    if MODE == 3:
        return b.to(tl.float8e5, bitcast=True).to(tl.float32)
    return b.to(tl.float32)


@triton.jit
def dequant_kernel(q_ptr, s_ptr, z_ptr, out_ptr, n_groups, QMIN: tl.constexpr, GROUP: tl.constexpr,
                   GROUP_P2: tl.constexpr, BLOCK_G: tl.constexpr, MODE: tl.constexpr, HAS_ZERO: tl.constexpr):
    """``out[g, e] = (code + QMIN) * scale[g] (+ zero[g])`` for ``BLOCK_G`` groups per program (fp32 math,
    one rounding to ``out``'s dtype). A group narrower than its power-of-two tile is masked."""
    g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = g < n_groups
    lane = tl.arange(0, GROUP_P2)
    mask = gmask[:, None] & (lane[None, :] < GROUP)
    q = _codes(q_ptr, g, gmask, lane[None, :], mask, GROUP, MODE) + QMIN
    s = tl.load(s_ptr + g, mask=gmask, other=0).to(tl.float32)
    w = q * s[:, None]
    if HAS_ZERO:
        w += tl.load(z_ptr + g, mask=gmask, other=0).to(tl.float32)[:, None]
    tl.store(out_ptr + g[:, None] * GROUP + lane[None, :], w.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def matvec_kernel(x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, out_ptr, n_rows, n_groups, stride_x, stride_out,
                  QMIN: tl.constexpr, GROUP: tl.constexpr, GROUP_P2: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_G: tl.constexpr, MODE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n])`` straight from the codes: program ``(i, m)``
    computes ``BLOCK_N`` outputs of input row ``m``, ``BLOCK_G`` groups at a time. Per group the scale is
    applied once to the code-times-input sum (and the zero point to the input's sum), in fp32."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1)
    nmask = n < n_rows
    lane = tl.arange(0, GROUP_P2)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g0 in range(0, n_groups, BLOCK_G):
        j = g0 + tl.arange(0, BLOCK_G)
        kmask = (j[:, None] < n_groups) & (lane[None, :] < GROUP)  # [BLOCK_G, GROUP_P2]
        x = tl.load(x_ptr + m * stride_x + j[:, None] * GROUP + lane[None, :], mask=kmask, other=0).to(tl.float32)
        flat = n[:, None] * n_groups + j[None, :]  # [BLOCK_N, BLOCK_G]
        gmask = nmask[:, None] & (j[None, :] < n_groups)
        q = _codes(q_ptr, flat, gmask, lane[None, None, :], gmask[:, :, None] & kmask[None, :, :], GROUP, MODE)
        part = tl.sum((q + QMIN) * x[None, :, :], axis=2)  # masked lanes: x is 0 there
        part = part * tl.load(s_ptr + flat, mask=gmask, other=0).to(tl.float32)
        if HAS_ZERO:
            part += tl.load(z_ptr + flat, mask=gmask, other=0).to(tl.float32) * tl.sum(x, axis=1)[None, :]
        acc += tl.sum(part, axis=1)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=nmask, other=0).to(tl.float32)
    tl.store(out_ptr + m * stride_out + n, acc.to(out_ptr.dtype.element_ty), mask=nmask)
