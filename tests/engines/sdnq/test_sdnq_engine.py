"""The adapter: declarations, options, refusals, description."""
import pytest
import torch
from torch import nn

from engines.base import EngineError, Unsupported
from engines.registry import get_engine_class
from engines.sdnq.dtypes import ALL_TYPES

SDNQ = get_engine_class("sdnq")
CPU = torch.device("cpu")


def test_declarations():
    assert SDNQ.name == "sdnq" and SDNQ.default_dtype == "int8" and SDNQ.modes == ("pre", "post")
    assert SDNQ.dtypes == ALL_TYPES and SDNQ.requires == ()
    assert set(SDNQ.option_defaults()) == {"group_size", "quant_conv", "use_quantized_matmul", "quantized_matmul_conv",
                                 "dequantize_fp32", "compile_dequantize", "quantize_device", "dequant_backend",
                                 "int8_backend", "fuse_qkv", "fp8_fast_accum", "quantized_attention"}


def test_unknown_option_and_dtype_are_rejected():
    with pytest.raises(ValueError, match="has no option 'groupsize'. Did you mean: group_size"):
        SDNQ("int8", options={"groupsize": 32})
    with pytest.raises(ValueError, match="supports"):
        SDNQ("int9")
    with pytest.raises(ValueError, match="quantize_device"):
        SDNQ("int8", options={"quantize_device": "tpu"})


@pytest.mark.parametrize("wtype", ["uint4", "uint8", "float8_e4m3fnuz", "float8_e5m2fnuz"], ids=lambda t: f"w-{t}")
def test_quantized_matmul_refused_for_types_without_it(wtype):
    with pytest.raises(Unsupported, match="quantized matmul"):
        SDNQ(wtype, options={"use_quantized_matmul": True}).check_platform(CPU)


@pytest.mark.parametrize("wtype", ["int8", "int4", "float8_e4m3fn", "float8_e5m2"], ids=lambda t: f"w-{t}")
def test_quantized_matmul_runs_on_cpu(wtype):
    SDNQ(wtype, options={"use_quantized_matmul": True}).check_platform(CPU)  # int8 exact, fp8 emulated


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_cuda_quantize_device_without_gpu_is_unsupported():
    with pytest.raises(Unsupported, match="CUDA"):
        SDNQ("int8", options={"quantize_device": "cuda"}).check_platform(CPU)


def test_verify_refuses_a_model_with_nothing_quantized():
    engine = SDNQ("int8")
    with pytest.raises(EngineError):
        engine.verify("transformer", nn.Sequential(nn.Linear(8, 8)))


def test_count_and_report():
    engine = SDNQ("int4", options={"group_size": 32})
    model = engine.quantize("transformer", nn.Sequential(nn.Linear(64, 64), nn.Conv2d(4, 4, 1)).bfloat16())
    assert engine.count_quantized(model) == (1, 1)
    desc = engine.report()
    assert desc["settings"]["group_size"] == 32 and desc["dtype"] == "int4"
    assert desc["sdnq"]["components"]["transformer"]["weight_types"] == {"int4": 1}


def test_group_size_option_reaches_layers():
    engine = SDNQ("uint4", options={"group_size": 16})
    model = engine.quantize("transformer", nn.Sequential(nn.Linear(64, 8)).bfloat16())
    assert model[0].group_size == 16 and model[0].scale.shape == (8, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("wtype", ["int8", "float8_e4m3fn"], ids=lambda t: f"w-{t}")
def test_gpu_quantized_matmul_matches_cpu_reference(wtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).bfloat16()
    engine = SDNQ(wtype, options={"use_quantized_matmul": True})
    engine.check_platform(torch.device("cuda"))
    model = engine.quantize("transformer", model)
    x = torch.randn(64, 256).bfloat16()
    cpu = model(x).float()
    gpu = model.to("cuda")(x.cuda()).float().cpu()
    assert float((gpu - cpu).norm() / cpu.norm()) < 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_triton_int8_kernel_is_exact():
    from engines.sdnq import triton_int8
    if not triton_int8.available():
        pytest.skip("no Triton / INT8 tensor cores")
    g = torch.Generator(device="cuda").manual_seed(0)
    for m, n, k in [(4608, 3072, 3072), (17, 64, 80), (1, 256, 512)]:
        xq = torch.randint(-128, 128, (m, k), device="cuda", dtype=torch.int8, generator=g)
        wq = torch.randint(-128, 128, (n, k), device="cuda", dtype=torch.int8, generator=g)
        xs, ws = torch.rand(m, 1, device="cuda"), torch.rand(n, 1, device="cuda")
        bias = torch.randn(n, device="cuda").bfloat16()
        out = triton_int8.int8_mm_scaled(xq, wq, xs, ws, bias, torch.float32)
        ref = (xq.double() @ wq.double().t()) * xs.double() * ws.double().t() + bias.double()
        assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_compiled_dequantize_matches_eager():
    from engines.sdnq import SDNQConfig, SDNQLinear
    lin = nn.Linear(256, 128).bfloat16().cuda()
    q = SDNQLinear.from_linear(lin, SDNQConfig("uint5", compile_dequantize=True))
    eager = SDNQLinear.from_linear(lin, SDNQConfig("uint5", compile_dequantize=False))
    assert torch.equal(q.dequantize_weight(), eager.dequantize_weight())
