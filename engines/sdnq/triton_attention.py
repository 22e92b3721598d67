"""Triton flash attention on quantized operands (CUDA only; imported lazily by `engines.sdnq.attention`).

Inputs, per (batch x head) ``bh``: ``qi`` / ``ki`` int8 ``[BH, S, D]`` with one fp32 scale per token (``qs`` /
``ks``), ``vt`` ``[BH, D, S]`` in float8_e4m3fn or bf16 (V transposed, so the P x V product reads it K-major
as the FP8 tensor cores want) with one fp32 scale per channel (``vs`` ``[BH, D]``). Per program: ``BLOCK_M`` query rows
against every key in blocks of ``BLOCK_N``: ``S = (qi @ ki.T) * qs * ks`` from an INT8 GEMM with int32
accumulation (``qs`` arrives multiplied by ``qk_scale`` = softmax scale x log2(e)), an online softmax in fp32
(base 2), and ``P x V`` as an
GEMM of ``P * P_SCALE`` rounded to V's dtype (P is at most 1 after the running maximum is subtracted, so
the power-of-two factor puts it in e4m3's normal range) with fp32 accumulation. The output is ``acc * vs / (P_SCALE * l)``.
No mask, no causal variant, no dropout: `engines.sdnq.attention` uses SDPA for those.
Exposed as the custom op ``sdnq::int8_attention`` so torch.compile keeps it as one opaque call.
"""
from __future__ import annotations

import torch

P_SCALE = 256.0
RAW_KERNEL = None
_KERNEL = None


def _configs():
    import triton
    shapes = [(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 4, 4)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


def _kernel():
    global _KERNEL, RAW_KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def int8_attention_kernel(q_ptr, qs_ptr, k_ptr, ks_ptr, vt_ptr, vs_ptr, o_ptr, S,
                              D: tl.constexpr, P_SCALE: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr):
        start_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        base = bh * S * D
        mmask = offs_m < S
        q = tl.load(q_ptr + base + offs_m[:, None] * D + offs_d[None, :], mask=mmask[:, None], other=0)
        qs = tl.load(qs_ptr + bh * S + offs_m, mask=mmask, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            nmask = offs_n < S
            k = tl.load(k_ptr + base + offs_n[:, None] * D + offs_d[None, :], mask=nmask[:, None], other=0)
            ks = tl.load(ks_ptr + bh * S + offs_n, mask=nmask, other=0.0)
            s = tl.dot(q, tl.trans(k), out_dtype=tl.int32).to(tl.float32) * qs[:, None] * ks[None, :]
            s = tl.where(nmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(vt_ptr + base + offs_d[:, None] * S + offs_n[None, :], mask=nmask[None, :], other=0.0)
            acc = acc * alpha[:, None]
            acc = tl.dot((p * P_SCALE).to(vt.dtype), tl.trans(vt), acc)
            m_i = m_new
        vs = tl.load(vs_ptr + bh * D + offs_d)
        out = acc * (vs[None, :] / P_SCALE) / l_i[:, None]
        tl.store(o_ptr + base + offs_m[:, None] * D + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=mmask[:, None])

    RAW_KERNEL = int8_attention_kernel  # un-tuned: the CPU test runs it under TRITON_INTERPRET=1
    tuned = triton.autotune(configs=_configs(), key=["S", "D"])(int8_attention_kernel)

    def launch(qi, qs, ki, ks, vt, vs, out, qk_scale):
        bh, s, d = qi.shape
        grid = lambda meta: (triton.cdiv(s, meta["BLOCK_M"]), bh)  # noqa: E731
        tuned[grid](qi, qs * qk_scale, ki, ks, vt, vs, out, s, D=d, P_SCALE=P_SCALE)
        return out

    _KERNEL = launch
    return _KERNEL


@torch.library.custom_op("sdnq::int8_attention", mutates_args=())
def _int8_attention(qi: torch.Tensor, qs: torch.Tensor, ki: torch.Tensor, ks: torch.Tensor, vt: torch.Tensor,
                    vs: torch.Tensor, qk_scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(qi.shape, dtype=out_dtype, device=qi.device)
    return _kernel()(qi.contiguous(), qs.float().contiguous(), ki.contiguous(), ks.float().contiguous(),
                     vt.contiguous(), vs.float().contiguous(), out, qk_scale)


@_int8_attention.register_fake
def _(qi, qs, ki, ks, vt, vs, qk_scale, out_dtype):
    return qi.new_empty(qi.shape, dtype=out_dtype)


def int8_attention(qi, qs, ki, ks, vt, vs, qk_scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    """softmax(Q K^T) V from the quantized operands (see the module doc); ``[BH, S, D]`` in ``out_dtype``."""
    return _int8_attention(qi, qs, ki, ks, vt, vs, float(qk_scale), out_dtype)
