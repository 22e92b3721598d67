"""SDNQ's quantized matmul on a GPU, eager and compiled, against the exact torch reference: FP8 with fast and
with full-precision accumulation, INT8, and fused projections."""
import pytest
import torch

from engines.sdnq import matmul
from engines.sdnq.config import SDNQConfig
from engines.sdnq.fuse import concat
from engines.sdnq.layers import SDNQLinear

pytestmark = pytest.mark.gpu


def _rel(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def _reference(layer, x):
    """The exact product of the quantized operands (fp32 math): what the kernels approximate."""
    x2 = x.reshape(-1, x.shape[-1])
    if layer.weight_type.startswith("float8"):
        xq, xs = matmul.quantize_rows_fp8(x2)
        w = layer.qweight.view(torch.float8_e4m3fn).float()
    else:
        xq, xs = matmul.quantize_rows_int8(x2)
        w = matmul.int8_weight(layer).float()
    out = (xq.float() @ w.t()) * xs * layer.scale.float().view(1, -1) + layer.bias.float()
    return out.view(*x.shape[:-1], -1)


@pytest.fixture(params=[True, False], ids=["fast-accum", "exact-accum"])
def fast_accum(request):
    before = matmul.FP8_FAST_ACCUM
    matmul.FP8_FAST_ACCUM = request.param
    yield request.param
    matmul.FP8_FAST_ACCUM = before


def _layer(wtype, n=3072, k=3072, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = (torch.randn(n, k, device="cuda", generator=g) / k ** 0.5).bfloat16()
    b = (torch.randn(n, device="cuda", generator=g) * 0.02).bfloat16()
    return SDNQLinear.from_weight(w, b, SDNQConfig(wtype, use_quantized_matmul=True))


@pytest.mark.parametrize("wtype", ["float8_e4m3fn", "int8"])
def test_quantized_linear_matches_the_exact_product_eager_and_compiled(wtype, fast_accum):
    if wtype.startswith("float8") and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmul needs sm_89+")
    layer = _layer(wtype)
    assert layer.use_quantized_matmul
    x = torch.randn(2, 4096, 3072, device="cuda").bfloat16()
    ref = _reference(layer, x)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, dynamic=False)(x)
    limit = 2e-2 if (wtype.startswith("float8") and fast_accum) else 1e-2  # bf16 output rounding, accumulation order
    assert _rel(eager, ref) < limit and _rel(compiled, ref) < limit


@pytest.mark.parametrize("wtype", ["float8_e4m3fn", "int8"])
def test_a_fused_projection_matches_its_parts_on_the_gpu(wtype):
    if wtype.startswith("float8") and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmul needs sm_89+")
    parts = [_layer(wtype, seed=s) for s in range(3)]
    fused = concat(parts)
    x = torch.randn(1, 4608, 3072, device="cuda").bfloat16()
    with torch.no_grad():
        ref = torch.cat([p(x) for p in parts], dim=-1)
        assert _rel(fused(x), ref) < 1e-3
        assert _rel(torch.compile(fused, dynamic=False)(x), ref) < 1e-2
