"""SDNQ's quantized attention kernel on a GPU, eager and compiled, against the fp32 emulation of the same
quantized operands and against SDPA."""
import pytest
import torch
import torch.nn.functional as F

from engines.sdnq import attention

pytestmark = pytest.mark.gpu


def _rel(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


@pytest.mark.parametrize("pv_fp8", [False, True], ids=["int8", "int8-fp8"])
@pytest.mark.parametrize("s", [4608, 1000])
def test_the_kernel_matches_its_emulation_eager_and_compiled(pv_fp8, s):
    if not attention.kernel_available():
        pytest.skip("needs CUDA sm_89+ and Triton")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4, s, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    ops = attention.quantize(q, k, v, pv_fp8)
    emulated = attention.emulate(*ops, 128 ** -0.5, torch.float32)
    with torch.no_grad():
        eager = attention.attention(q, k, v, pv_fp8=pv_fp8)
        compiled = torch.compile(lambda a, b, c: attention.attention(a, b, c, pv_fp8=pv_fp8), dynamic=False)(q, k, v)
    sdpa = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    # the kernel rescales block by block where the emulation takes one softmax: P's rounding differs
    assert _rel(eager, emulated) < (1e-2 if not pv_fp8 else 3e-2)
    assert _rel(compiled, eager) < 1e-2
    assert _rel(eager, sdpa) < (2e-2 if not pv_fp8 else 6e-2)
