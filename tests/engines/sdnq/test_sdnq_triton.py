"""The Triton INT8 GEMM, run on CPU by Triton's interpreter (TRITON_INTERPRET=1, in a subprocess
because the variable must be set before Triton is imported)."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    from engines.sdnq import triton_int8
    try:
        triton_int8._kernel()  # the autotuned wrapper needs a GPU driver; the raw kernel does not
    except Exception:
        pass
    kernel = triton_int8.RAW_KERNEL
    g = torch.Generator().manual_seed(0)
    for m, n, k, bk in [(70, 64, 256, 64), (5, 48, 96, 64)]:  # ragged M/N, and K % BLOCK_K != 0
        xq = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        wq = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
        xs, ws, bias = torch.rand(m, generator=g), torch.rand(n, generator=g), torch.randn(n, generator=g)
        out = torch.empty(m, n)
        grid = (-(-m // 32) * -(-n // 32),)
        kernel[grid](xq, wq, out, xs, ws, bias, m, n, k, xq.stride(0), xq.stride(1), wq.stride(0),
                     wq.stride(1), out.stride(0), out.stride(1), HAS_BIAS=True, BLOCK_M=32, BLOCK_N=32,
                     BLOCK_K=bk, GROUP_M=8, EVEN_K=k % bk == 0)
        ref = (xq.double() @ wq.double().t()) * xs.double()[:, None] * ws.double()[None] + bias.double()
        assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-2), float((out.double() - ref).abs().max())
    print("ok")
""")


def test_triton_int8_kernel_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
