"""Quantized layers: equivalence with dequantize-then-op, storage, device moves, compile."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engines.base import module_nbytes
from engines.sdnq import SDNQConfig, SDNQConv2d, SDNQLinear, quantize_model
from engines.sdnq.dtypes import ALL_TYPES


def wid(wtype):
    return f"w-{wtype}"


def _linear(k=64, n=48, bias=True):
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias).bfloat16()


@pytest.mark.parametrize("wtype", ALL_TYPES, ids=wid)
def test_linear_equals_dequantized_matmul(wtype):
    lin = _linear()
    q = SDNQLinear.from_linear(lin, SDNQConfig(wtype))
    x = torch.randn(3, 5, 64).bfloat16()
    expected = F.linear(x, q.dequantize_weight(), q.bias)
    assert torch.equal(q(x), expected)
    assert q(x).shape == (3, 5, 48)


@pytest.mark.parametrize("wtype", ["int8", "int4", "uint4", "uint2", "float8_e4m3fn"], ids=wid)
def test_conv_equals_dequantized_conv(wtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1).bfloat16()
    q = SDNQConv2d.from_conv(conv, SDNQConfig(wtype, quant_conv=True))
    x = torch.randn(2, 8, 9, 9).bfloat16()
    assert torch.equal(q(x), F.conv2d(x, q.dequantize_weight(), q.bias, 2, 1))
    assert q.weight_type == ("uint4" if wtype == "uint2" else wtype)
    ref = conv(x).float()
    assert float((q(x).float() - ref).norm() / ref.norm()) < 0.15


def test_weight_property_is_read_only_dequantized_copy():
    q = SDNQLinear.from_linear(_linear(), SDNQConfig("int8"))
    assert q.weight.dtype == torch.bfloat16 and q.weight.shape == (48, 64)
    with pytest.raises(AttributeError):
        q.weight = torch.zeros(48, 64)
    assert "weight" not in dict(q.named_parameters())


def test_storage_is_plain_tensors_of_packed_dtype():
    q = SDNQLinear.from_linear(_linear(bias=False), SDNQConfig("int6", group_size=-1))
    names = {n: t.dtype for n, t in [*q.named_parameters(), *q.named_buffers()]}
    assert names == {"qweight": torch.uint8, "scale": torch.bfloat16}
    assert module_nbytes(q) == 48 * 64 * 6 // 8 + 48 * 2
    assert not q.qweight.requires_grad


def test_float8_survives_model_dtype_cast():
    q = SDNQLinear.from_linear(_linear(), SDNQConfig("float8_e4m3fn"))
    before = q.qweight.clone()
    q.to(torch.float16)  # a pipeline-wide dtype cast must not touch the float8 codes
    assert torch.equal(q.qweight, before)


def test_quantize_model_replaces_only_targets():
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.LayerNorm(32)).bfloat16()
    quantize_model(model, SDNQConfig("int8"))
    assert isinstance(model[0], SDNQLinear) and type(model[2]) is nn.Conv2d
    quantize_model(model, SDNQConfig("int8", quant_conv=True, skip=("0",)))
    assert isinstance(model[2], SDNQConv2d)


def test_skip_list():
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32)).bfloat16()
    quantize_model(model, SDNQConfig("int8", skip=("1",)))
    assert isinstance(model[0], SDNQLinear) and type(model[1]) is nn.Linear


def test_device_move_keeps_quantized_tensors_together():
    model = quantize_model(nn.Sequential(_linear()), SDNQConfig("uint4"))
    moved = copy.deepcopy(model).to("meta")
    assert all(t.is_meta for t in [*moved.parameters(), *moved.buffers()])
    assert {n for n, _ in moved.named_buffers()} == {"0.scale", "0.zero_point"}


def test_state_dict_round_trip():
    q = SDNQLinear.from_linear(_linear(), SDNQConfig("int5"))
    fresh = SDNQLinear.from_linear(nn.Linear(64, 48).bfloat16(), SDNQConfig("int5"))
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(2, 64).bfloat16()
    assert torch.equal(fresh(x), q(x))


def test_dequantize_fp32_option_is_at_least_as_exact():
    lin = _linear()
    w = lin.weight.float()
    plain = SDNQLinear.from_linear(lin, SDNQConfig("uint4")).dequantize_weight(torch.float32)
    fp32 = SDNQLinear.from_linear(lin, SDNQConfig("uint4", dequantize_fp32=True)).dequantize_weight(torch.float32)
    assert (fp32 - w).norm() <= (plain - w).norm() * 1.001


@pytest.mark.parametrize("qmm", [False, True], ids=["dequantize", "quantized-matmul"])
@pytest.mark.parametrize("wtype", ["int8", "int4", "uint4", "float8_e4m3fn"],
                         ids=wid)
def test_whole_model_compiles_without_graph_breaks(wtype, qmm):
    if qmm and wtype == "uint4":
        pytest.skip("uint types have no quantized matmul")
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 32)).bfloat16()
    quantize_model(model, SDNQConfig(wtype, use_quantized_matmul=qmm))
    x = torch.randn(4, 64).bfloat16()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x).float(), model(x).float(), atol=1e-2, rtol=1e-2)
