"""Engines on a real GPU: weights are converted when the engine returns, not lazily at first forward."""
import pytest
import torch

from engines.base import module_nbytes

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["int8", "nf4"])
def test_bnb_post_mode_on_gpu_stores_quantized_weights(dtype):
    from engines.bnb import BitsAndBytesEngine

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256)).to("cuda", torch.bfloat16)
    before = module_nbytes(model)
    engine = BitsAndBytesEngine(dtype)
    engine.check_platform(torch.device("cuda"))
    engine.quantize("transformer", model)
    assert module_nbytes(model) < 0.6 * before
    assert all(p.dtype in (torch.int8, torch.uint8) for n, p in model.named_parameters() if n.endswith("weight"))


@pytest.mark.parametrize("wtype, group, k", [("int8", 1024, 3072), ("uint8", 256, 3072), ("int4", 64, 3072),
                                             ("uint4", 64, 3072), ("int8", 480, 2880), ("uint8", 640, 1280),
                                             ("float8_e4m3fn", 1024, 3072), ("float8_e5m2", 320, 640)])
def test_sdnq_triton_dequantize_kernel_matches_the_torch_path(wtype, group, k):
    from engines.sdnq import triton_dequant
    from engines.sdnq.quantize import dequantize_2d, quantize_weight

    w = (torch.randn(1280, k, device="cuda") * 0.02).bfloat16()
    qw = quantize_weight(w, wtype, group)
    assert qw.group_size == group and triton_dequant.supports(wtype, qw.group_size, w.device)
    ref = dequantize_2d(qw.data, qw.scale, qw.zero_point, wtype, qw.group_size, torch.bfloat16)
    out = triton_dequant.dequantize(qw.data, qw.scale, qw.zero_point, wtype, qw.group_size, torch.bfloat16)
    assert torch.equal(out, ref)
    compiled = torch.compile(lambda: triton_dequant.dequantize(qw.data, qw.scale, qw.zero_point, wtype,
                                                               qw.group_size, torch.bfloat16))
    assert torch.equal(compiled(), ref)  # an opaque custom op under torch.compile


@pytest.mark.parametrize("wtype, group, shape, rows", [("int8", 1024, (18432, 3072), 1), ("uint4", 64, (9216, 3072), 1),
                                                       ("int4", 64, (6144, 3072), 2), ("uint8", 480, (1280, 2880), 4),
                                                       ("float8_e4m3fn", 1024, (3072, 3072), 1)])
def test_sdnq_few_row_linear_kernel_equals_the_dequantized_linear(wtype, group, shape, rows):
    from engines.sdnq import triton_matvec
    from engines.sdnq.quantize import dequantize_2d, quantize_weight

    w = (torch.randn(shape, device="cuda") * 0.02).bfloat16()
    qw = quantize_weight(w, wtype, group)
    x = torch.randn(rows, shape[1], device="cuda").bfloat16()
    bias = torch.randn(shape[0], device="cuda").bfloat16()
    assert triton_matvec.applies(x, wtype, qw.group_size, shape[1])
    exact = dequantize_2d(qw.data, qw.scale, qw.zero_point, wtype, qw.group_size, torch.float32, fp32=True)
    ref = torch.nn.functional.linear(x.float(), exact, bias.float())
    out = triton_matvec.linear(x, qw.data, qw.scale, qw.zero_point, bias, wtype, qw.group_size)
    tol = 2 ** -7 * ref.abs().max().item()
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, rtol=2 ** -7, atol=tol)
    compiled = torch.compile(lambda: triton_matvec.linear(x, qw.data, qw.scale, qw.zero_point, bias, wtype,
                                                          qw.group_size))
    assert torch.allclose(compiled().float(), ref, rtol=2 ** -7, atol=tol)  # an opaque custom op under torch.compile
