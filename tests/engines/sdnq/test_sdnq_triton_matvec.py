"""The few-row linear kernel (`triton_matvec`): equal to F.linear on the exactly dequantized weight in
Triton's interpreter, for every layout the dequantization kernel takes; compiled ahead of time for Hopper;
and SDNQLinear sends few-row inputs to it and the rest to dequantize + F.linear."""
import textwrap

import pytest
import torch

from engines.sdnq import layers, triton_dequant, triton_matvec
from engines.sdnq.config import SDNQConfig
from engines.sdnq.layers import SDNQLinear
from tests.engines.sdnq.triton_tools import code_type, compile_for, run_interpreted

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from engines.sdnq import layers, triton_matvec as tm
    from engines.sdnq.config import SDNQConfig
    from engines.sdnq.layers import SDNQLinear
    from engines.sdnq.quantize import dequantize_2d, quantize_weight
    g = torch.Generator().manual_seed(0)
    cases = [("int8", 128, (24, 512), 1), ("uint8", 64, (10, 384), 2), ("int4", 64, (12, 256), 3),
             ("uint4", 32, (7, 160), 1), ("int4", 16, (3, 48), 4),  # group counts not a multiple of BLOCK_G
             ("int8", 320, (5, 640), 1), ("uint8", 480, (4, 2880), 2),  # groups that are not powers of two
             ("float8_e4m3fn", 96, (6, 384), 1), ("float8_e5m2", 64, (9, 128), 1),
             ("int8", 1024, (17, 3072), 1), ("uint4", 64, (20, 4096), 1)]  # FLUX-like: rows not a multiple of BLOCK_N
    for wtype, group, shape, m in cases:
        w = (torch.randn(shape, generator=g) * 0.05).bfloat16()
        qw = quantize_weight(w, wtype, group)
        exact = dequantize_2d(qw.data, qw.scale, qw.zero_point, wtype, group, torch.float32, fp32=True)
        bias = torch.randn(shape[0], generator=g).bfloat16()
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2 ** -7)):
            x = torch.randn(m, shape[1], generator=g).to(dtype)
            for b in (None, bias):
                ref = F.linear(x.float(), exact, None if b is None else b.float())
                out = tm.linear(x, qw.data, qw.scale, qw.zero_point, b, wtype, group)
                assert out.dtype == dtype and out.shape == ref.shape
                assert torch.allclose(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item()), (wtype, dtype)
    # through the layer: a [batch, 1, K] input, as FLUX's modulation layers see it
    layers._use_triton_kernel = lambda layer: True
    lin = torch.nn.Linear(256, 96).bfloat16()
    q = SDNQLinear.from_linear(lin, SDNQConfig(weight_type="uint4"))
    x = torch.randn(2, 1, 256, generator=g).bfloat16()
    ref = F.linear(x.float(), q.quantized().dequantize(torch.float32, fp32=True), q.bias.float())
    out = q(x)
    assert out.shape == (2, 1, 96) and torch.allclose(out.float(), ref, rtol=2 ** -7, atol=2 ** -7 * ref.abs().max().item())
    print("ok")
""")


def test_few_row_kernel_equals_the_dequantized_linear_in_interpreter():
    run_interpreted(SCRIPT)


@pytest.mark.parametrize("shape, expected", [((1, 3072), True), ((2, 1, 3072), True), ((4, 3072), True),
                                             ((5, 3072), False), ((1, 4096, 3072), False)])
def test_applies_to_few_rows_only(shape, expected):
    assert triton_matvec.applies(torch.empty(shape), "int8", 1024, 3072) is expected


def test_applies_only_to_layouts_the_kernels_decode_and_inputs_of_the_right_width():
    x = torch.empty(1, 3072)
    assert not triton_matvec.applies(x, "int6", 256, 3072)
    assert not triton_matvec.applies(x, "int4", 48, 3072)
    assert not triton_matvec.applies(x, "int8", 1024, 2048)  # F.linear raises the shape error
    assert not triton_matvec.applies(torch.empty(0, 3072), "int8", 1024, 3072)


@pytest.mark.parametrize("rows, fused", [(1, True), (8, False)])
def test_layer_sends_few_rows_to_the_kernel(monkeypatch, rows, fused):
    calls = []
    monkeypatch.setattr(layers, "_use_triton_kernel", lambda layer: True)
    monkeypatch.setattr(triton_matvec, "linear", lambda x, *a: calls.append(a) or x.new_zeros(*x.shape[:-1], 32))
    monkeypatch.setattr(triton_dequant, "dequantize",
                        lambda data, scale, zero, wtype, group, dtype: torch.zeros(32, 64, dtype=dtype))
    layer = SDNQLinear.from_linear(torch.nn.Linear(64, 32), SDNQConfig(weight_type="int8"))
    out = layer(torch.randn(rows, 64))
    assert out.shape == (rows, 32) and bool(calls) is fused


def test_a_failing_kernel_falls_back_to_the_torch_path_once(monkeypatch):
    monkeypatch.setattr(layers, "_KERNEL_FAILED", [])
    monkeypatch.setattr(layers, "_use_triton_kernel", lambda layer: not layers._KERNEL_FAILED)

    def broken(*args):
        raise RuntimeError("no kernel image for this device")

    monkeypatch.setattr(triton_matvec, "linear", broken)
    lin = torch.nn.Linear(64, 32)
    layer = SDNQLinear.from_linear(lin, SDNQConfig(weight_type="int8"))
    x = torch.randn(1, 64).bfloat16()
    with pytest.warns(UserWarning, match="Triton kernels failed"):
        out = layer(x)
    assert torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert len(layers._KERNEL_FAILED) == 1


@pytest.mark.parametrize("mode, group, has_zero", [
    (triton_dequant.MODE_BYTE, 1024, False), (triton_dequant.MODE_BYTE, 480, True),
    (triton_dequant.MODE_NIBBLE, 64, True), (triton_dequant.MODE_E4M3, 1024, False),
])
def test_kernel_compiles_for_hopper_without_a_gpu(mode, group, has_zero):
    from engines.sdnq.triton_kernels import matvec_kernel

    width = triton_dequant._pow2(group)
    signature = {"x_ptr": "*bf16", "q_ptr": code_type(mode), "s_ptr": "*bf16", "z_ptr": "*bf16", "b_ptr": "*bf16",
                 "out_ptr": "*bf16", "n_rows": "i32", "n_groups": "i32", "stride_x": "i32", "stride_out": "i32"}
    constants = {"QMIN": 0, "GROUP": group, "GROUP_P2": width, "BLOCK_N": triton_matvec.BLOCK_N,
                 "BLOCK_G": max(1, triton_matvec.CHUNK // width), "MODE": mode, "HAS_ZERO": has_zero,
                 "HAS_BIAS": True}
    assert compile_for(matvec_kernel, 90, signature, constants).asm["cubin"]
