"""Quantized matmul equals dequantize-then-matmul within the activation-quantization error."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engines.sdnq import SDNQConfig, SDNQConv2d, SDNQLinear
from engines.sdnq.dtypes import INT_TYPES
from engines.sdnq.matmul import int8_matmul, quantize_rows_fp8, quantize_rows_int8

QMM_TYPES = INT_TYPES + ("float8_e4m3fn", "float8_e5m2")


def wid(wtype):
    return f"w-{wtype}"


def _layer(wtype, k=128, n=64):
    torch.manual_seed(0)
    lin = nn.Linear(k, n).bfloat16()
    return SDNQLinear.from_linear(lin, SDNQConfig(wtype, use_quantized_matmul=True))


@pytest.mark.parametrize("wtype", QMM_TYPES, ids=wid)
def test_matmul_within_activation_quantization_error(wtype):
    q = _layer(wtype)
    assert q.use_quantized_matmul and q.group_size == 128  # groups are disabled in this mode
    x = torch.randn(2, 7, 128).bfloat16()
    w = q.dequantize_weight(torch.float32)
    exact = x.float() @ w.t() + q.bias.float()
    out = q(x).float()
    # |x - x_q| per element is at most half the activation step (int8: amax/127, fp8: relative 2^-4)
    xa = x.float().abs()
    if wtype.startswith("float8"):
        step = xa * 2 ** -4 + xa.amax(-1, keepdim=True) / 448 * 2 ** -9
    else:
        step = xa.amax(-1, keepdim=True).expand_as(xa) / 127 / 2
    bound = step @ w.abs().t() + exact.abs() * 2 ** -7 + 1e-3  # + bf16 output rounding
    assert ((out - exact).abs() <= bound).all()


def test_int8_gemm_is_exact_integer_arithmetic():
    g = torch.Generator().manual_seed(0)
    xq = torch.randint(-128, 128, (5, 64), generator=g, dtype=torch.int8)
    wq = torch.randint(-128, 128, (32, 64), generator=g, dtype=torch.int8)
    ones = torch.ones(5, 1), torch.ones(32, 1)
    out = int8_matmul(xq, ones[0], wq, ones[1], None, torch.float32)
    assert torch.equal(out, (xq.long() @ wq.long().t()).float())


def test_activation_quantizers_are_per_token():
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 50.0, -25.0]])
    q, s = quantize_rows_int8(x)
    assert torch.allclose(s.view(-1), torch.tensor([2 / 127, 100 / 127]))
    assert q[:, 1].tolist() == [-127, 64] and q.dtype == torch.int8
    q8, s8 = quantize_rows_fp8(x)
    assert q8.dtype == torch.float8_e4m3fn and torch.allclose((q8.float() * s8), x, rtol=2 ** -3)


@pytest.mark.parametrize("wtype", ["int8", "int5", "float8_e4m3fn"], ids=wid)
def test_conv_quantized_matmul(wtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1, stride=2).bfloat16()
    q = SDNQConv2d.from_conv(conv, SDNQConfig(wtype, quant_conv=True, quantized_matmul_conv=True))
    assert q.use_quantized_matmul
    x = torch.randn(2, 16, 10, 10).bfloat16()
    ref = F.conv2d(x.float(), q.dequantize_weight(torch.float32), q.bias.float(), 2, 1)
    out = q(x).float()
    assert out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.03


def test_pointwise_conv_matmul():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 16, 1).bfloat16()
    q = SDNQConv2d.from_conv(conv, SDNQConfig("int8", quant_conv=True, quantized_matmul_conv=True))
    x = torch.randn(1, 32, 5, 6).bfloat16()
    ref = F.conv2d(x.float(), q.dequantize_weight(torch.float32), q.bias.float())
    assert float((q(x).float() - ref).norm() / ref.norm()) < 0.02


def test_odd_shapes_fall_back_to_dequantize_path():
    torch.manual_seed(0)
    q = SDNQLinear.from_linear(nn.Linear(40, 24).bfloat16(), SDNQConfig("int8", use_quantized_matmul=True))
    assert not q.use_quantized_matmul  # 40 is not a multiple of 16: GEMM kernels need it


def test_uint_types_never_use_quantized_matmul():
    q = SDNQLinear.from_linear(nn.Linear(64, 64).bfloat16(), SDNQConfig("uint8", use_quantized_matmul=True))
    assert not q.use_quantized_matmul
