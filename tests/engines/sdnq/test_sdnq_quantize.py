"""Tensor quantization: group sizes, per-type error bounds, stored bytes."""
import math

import pytest
import torch

from engines.sdnq.dtypes import FLOAT8_TYPES, INT_TYPES, UINT_TYPES, conv_weight_type, weight_type
from engines.sdnq.quantize import quantize_weight, resolve_group_size


def wid(wtype):
    return f"w-{wtype}"


@pytest.mark.parametrize("requested,bits,k,conv,expected", [
    (0, 8, 3072, False, 1024), (0, 4, 3072, False, 64), (0, 4, 3072, True, 32), (0, 2, 64, False, 16),
    (-1, 4, 3072, False, 3072), (128, 4, 3072, False, 128), (5000, 4, 3072, False, 3072),
    (64, 4, 96, False, 48),      # 64 does not divide 96: largest divisor below it
    (64, 4, 97, False, 97),      # prime: no usable divisor -> one group per row
    (0, 4, 27, True, 27),        # 3x3 conv on 3 channels
], ids=lambda v: str(v))
def test_resolve_group_size(requested, bits, k, conv, expected):
    assert resolve_group_size(requested, bits, k, conv) == expected


def test_sub_4bit_convs_use_uint4():
    assert conv_weight_type("int2") == "uint4" and conv_weight_type("uint1") == "uint4"
    assert conv_weight_type("int4") == "int4" and conv_weight_type("float8_e5m2") == "float8_e5m2"


def _weight(rows=48, k=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, k, generator=g) * 0.05).bfloat16()


@pytest.mark.parametrize("wtype", INT_TYPES + UINT_TYPES, ids=wid)
def test_integer_error_within_half_a_step(wtype):
    w = _weight()
    qw = quantize_weight(w, wtype, 0)
    back = qw.dequantize(torch.float32, fp32=True)
    step = qw.scale.float().repeat_interleave(qw.group_size, dim=1)
    err = (back - w.float()).abs()
    # half a quantization step, plus the rounding of the bf16 zero point (uint).
    slack = 2 ** -8 * w.float().abs().max() if wtype.startswith("u") else 1e-7
    assert (err <= step / 2 * (1 + 1e-5) + slack).all()
    # the step itself is what the bit width implies for each group's range
    wt = weight_type(wtype)
    g = w.float().view(w.shape[0], -1, qw.group_size)
    span = (g.amax(-1) - g.amin(-1)) / wt.qmax if wt.kind == "uint" else g.abs().amax(-1) / wt.qmax
    assert torch.allclose(qw.scale.float(), span, rtol=2 ** -6, atol=1e-8)


@pytest.mark.parametrize("wtype", FLOAT8_TYPES, ids=wid)
def test_float8_error_within_mantissa_bound(wtype):
    w = _weight()
    qw = quantize_weight(w, wtype, 0)
    back = qw.dequantize(torch.float32, fp32=True)
    mantissa = 3 if "e4m3" in wtype else 2
    scale = qw.scale.float().repeat_interleave(qw.group_size, dim=1)
    tiny = torch.finfo(weight_type(wtype).torch_float8).tiny
    bound = w.float().abs() * 2 ** -(mantissa + 1) + scale * tiny
    assert ((back - w.float()).abs() <= bound * 1.001).all()


@pytest.mark.parametrize("wtype", INT_TYPES + UINT_TYPES, ids=wid)
def test_error_shrinks_with_bits(wtype):
    w = _weight(seed=3)
    wt = weight_type(wtype)
    err = lambda t: float((quantize_weight(w, t, -1).dequantize(torch.float32) - w.float()).norm())  # noqa: E731
    if wt.bits > (2 if wt.kind == "int" else 1):
        assert err(wtype) < err(f"{wt.kind}{wt.bits - 1}")


@pytest.mark.parametrize("wtype", INT_TYPES + UINT_TYPES + FLOAT8_TYPES,
                         ids=wid)
def test_stored_bytes_are_real(wtype):
    w = _weight(rows=64, k=512)
    qw = quantize_weight(w, wtype, 0)
    wt = weight_type(wtype)
    groups = 512 // qw.group_size
    expected = 64 * 512 * wt.bits // 8 + 64 * groups * 2 * (2 if wt.kind == "uint" else 1)
    assert qw.nbytes() == expected
    assert qw.data.dtype in (torch.int8, torch.uint8)


def test_zero_and_constant_groups():
    w = torch.zeros(4, 64).bfloat16()
    w[1] = 0.25
    for wtype in ("int4", "uint4", "float8_e4m3fn", "uint1"):
        back = quantize_weight(w, wtype, 16).dequantize(torch.float32)
        assert torch.isfinite(back).all()
        assert torch.allclose(back, w.float(), atol=1e-2), wtype  # within half a step


def test_conv_weight_grouped_over_flattened_kernel():
    w = (torch.randn(16, 8, 3, 3) * 0.1).bfloat16()
    qw = quantize_weight(w, "uint4", 0, is_conv=True)
    assert qw.group_size == 24 and qw.scale.shape == (16, 3)  # 2**5=32 -> largest divisor of 72 below
    assert qw.dequantize().shape == w.shape
    assert math.prod(w.shape) // 2 == qw.data.numel()
