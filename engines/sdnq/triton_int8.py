"""Triton INT8 GEMM with the dequantization scales and bias fused into the epilogue (CUDA only).

``out[M,N] = (xq[M,K] @ wq[N,K].T) * x_scale[M] * w_scale[N] + bias[N]``, int32 accumulation on the
INT8 tensor cores (on Hopper, cuBLAS ``_int_mm`` does not reach the INT8 tensor-core rate).
Exposed as the custom op ``sdnq::int8_mm_scaled`` so torch.compile keeps it as one opaque call.
Nothing here touches CUDA or imports Triton until `available()` / the op is first used.
"""
from __future__ import annotations

import functools

import torch

_KERNEL = None
RAW_KERNEL = None


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """CUDA device with INT8 tensor cores (sm_80+) and an importable Triton."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability()[0] >= 8


def _configs():
    import triton
    shapes = [(128, 256, 128, 3, 8), (256, 128, 128, 3, 8), (128, 128, 128, 4, 8),
              (128, 128, 64, 4, 4), (64, 256, 128, 4, 4), (128, 64, 128, 4, 4),
              (64, 128, 128, 4, 4), (64, 64, 128, 4, 4), (32, 64, 128, 4, 4)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
                          num_stages=s, num_warps=w) for m, n, k, s, w in shapes]


def _kernel():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def int8_mm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, M, N, K,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * num_pid_n
        first_m = (pid // per_group) * GROUP_M
        group_m = min(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + ((pid % per_group) % group_m)
        pid_n = (pid % per_group) // group_m
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        rm = tl.where(offs_m < M, offs_m, 0)  # clamp rows/cols: loads stay in bounds, stores masked
        rn = tl.where(offs_n < N, offs_n, 0)
        a_ptrs = a_ptr + rm[:, None] * stride_am + offs_k[None, :] * stride_ak
        b_ptrs = b_ptr + rn[None, :] * stride_bn + offs_k[:, None] * stride_bk
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for kk in range(0, tl.cdiv(K, BLOCK_K)):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                rem = K - kk * BLOCK_K
                a = tl.load(a_ptrs, mask=offs_k[None, :] < rem, other=0)
                b = tl.load(b_ptrs, mask=offs_k[:, None] < rem, other=0)
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
        sa = tl.load(sa_ptr + rm)
        sb = tl.load(sb_ptr + rn)
        out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    global RAW_KERNEL
    RAW_KERNEL = int8_mm_kernel  # un-tuned kernel: the CPU test runs it under TRITON_INTERPRET=1
    int8_mm_kernel = triton.autotune(configs=_configs(), key=["M", "N", "K"])(
        triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})(int8_mm_kernel))

    def launch(xq, wq, x_scale, w_scale, bias, out):
        m, k = xq.shape
        n = wq.shape[0]
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        int8_mm_kernel[grid](xq, wq, out, x_scale, w_scale, bias if bias is not None else x_scale,
                             m, n, k, xq.stride(0), xq.stride(1), wq.stride(0), wq.stride(1),
                             out.stride(0), out.stride(1), HAS_BIAS=bias is not None)
        return out

    _KERNEL = launch
    return _KERNEL


@torch.library.custom_op("sdnq::int8_mm_scaled", mutates_args=())
def _int8_mm_scaled(xq: torch.Tensor, wq: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(xq.shape[0], wq.shape[0], dtype=out_dtype, device=xq.device)
    return _kernel()(xq.contiguous(), wq.contiguous(), x_scale.float().contiguous().view(-1),
                     w_scale.float().contiguous().view(-1), bias, out)


@_int8_mm_scaled.register_fake
def _(xq, wq, x_scale, w_scale, bias, out_dtype):
    return xq.new_empty(xq.shape[0], wq.shape[0], dtype=out_dtype)


def int8_mm_scaled(xq, wq, x_scale, w_scale, bias, out_dtype):
    """``(xq @ wq.T) * x_scale * w_scale.T + bias`` in ``out_dtype`` (see module doc)."""
    return _int8_mm_scaled(xq, wq, x_scale, w_scale, bias, out_dtype)
