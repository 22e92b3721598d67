"""The Triton dequantization kernel, run on CPU by Triton's interpreter: bit-identical to the torch path;
and compiled ahead of time for Hopper."""
import textwrap

import pytest

from engines.sdnq import triton_dequant
from tests.engines.sdnq.triton_tools import code_type, compile_for, run_interpreted

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    from engines.sdnq import triton_dequant as td
    from engines.sdnq.quantize import dequantize_2d, quantize_weight
    td._kernel()
    g = torch.Generator().manual_seed(0)
    cases = [("int8", 128, (24, 512)), ("uint8", 64, (10, 384)), ("int4", 64, (12, 256)),
             ("uint4", 32, (7, 160)), ("int4", 16, (3, 48)),  # group counts not a multiple of BLOCK_G
             ("int8", 320, (5, 640)), ("uint8", 480, (4, 2880)),  # groups that are not powers of two
             ("float8_e4m3fn", 96, (6, 384)), ("float8_e5m2", 64, (9, 128))]
    for wtype, group, shape in cases:
        w = (torch.randn(shape, generator=g) * 0.05).bfloat16()
        qw = quantize_weight(w, wtype, group)
        assert qw.group_size == group
        ref = dequantize_2d(qw.data, qw.scale, qw.zero_point, wtype, group, torch.bfloat16)
        mode, qmin = td.kernel_args(wtype)
        out32 = torch.empty(ref.shape, dtype=torch.float32)
        td._KERNEL(qw.data, qw.scale, qw.zero_point, out32, qmin, group, mode)
        exact = dequantize_2d(qw.data, qw.scale, qw.zero_point, wtype, group, torch.float32, fp32=True)
        assert torch.equal(out32, exact), wtype  # same fp32 math
        # rounded once to bf16 (round to nearest even, as Triton's GPU cast does): the torch path's bits
        assert torch.equal(out32.bfloat16(), ref), (wtype, group)
        out = torch.empty_like(ref)  # the interpreter's own bf16 cast may round differently: within 1 ulp
        td._KERNEL(qw.data, qw.scale, qw.zero_point, out, qmin, group, mode)
        assert torch.allclose(out.float(), ref.float(), rtol=2 ** -7, atol=0), wtype
    print("ok")
""")


def test_triton_dequantize_kernel_matches_the_torch_path_in_interpreter():
    run_interpreted(SCRIPT)


@pytest.mark.parametrize("wtype, group, expected", [
    ("int8", 1024, True), ("uint8", 64, True), ("int4", 64, True), ("uint4", 64, True),
    ("int8", 320, True), ("uint8", 480, True),  # padded to the next power of two, masked
    ("float8_e4m3fn", 1024, True), ("float8_e5m2", 640, True),
    ("int4", 48, False),  # packed nibbles: powers of two only
    ("int8", 16384, False),  # wider than a tile
    ("float8_e4m3fnuz", 64, False), ("int6", 256, False), ("uint2", 16, False),
])
def test_supported_layouts(wtype, group, expected):
    assert triton_dequant.supports(wtype, group) is expected


def test_cpu_tensors_never_take_the_kernel():
    import torch

    assert not triton_dequant.enabled(torch.device("cpu"))


def test_eager_calls_launch_the_kernel_directly_and_compiled_ones_use_the_custom_op(monkeypatch):
    import torch

    launched = []

    def fake_kernel(data, scale, zero, out, qmin, group, mode):
        launched.append((qmin, group, mode))
        return out.fill_(1)

    monkeypatch.setattr(triton_dequant, "_kernel", lambda: fake_kernel)
    data, scale = torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 2, dtype=torch.bfloat16)
    custom = []
    real_op = triton_dequant._dequantize_groups
    monkeypatch.setattr(triton_dequant, "_dequantize_groups", lambda *a: custom.append(a) or real_op(*a))
    out = triton_dequant.dequantize(data, scale, None, "int8", 32, torch.bfloat16)
    assert out.shape == (4, 64) and bool((out == 1).all()) and launched == [(0, 32, 0)] and custom == []
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    triton_dequant.dequantize(data, scale, None, "int8", 32, torch.bfloat16)
    assert len(custom) == 1 and len(launched) == 2


def _compile_for(cap: int, mode: int, group: int, has_zero: bool = False):
    triton_dequant._kernel()
    width = triton_dequant._pow2(group)
    signature = {"q_ptr": code_type(mode), "s_ptr": "*bf16", "z_ptr": "*bf16", "out_ptr": "*bf16", "n_groups": "i32"}
    constants = {"QMIN": 0, "GROUP": group, "GROUP_P2": width, "BLOCK_G": max(1, triton_dequant.TILE // width),
                 "MODE": mode, "HAS_ZERO": has_zero}
    return compile_for(triton_dequant.RAW_KERNEL, cap, signature, constants)


@pytest.mark.parametrize("mode, group, has_zero", [
    (triton_dequant.MODE_BYTE, 1024, False), (triton_dequant.MODE_BYTE, 480, True),  # padded, masked tile
    (triton_dequant.MODE_NIBBLE, 64, True), (triton_dequant.MODE_E4M3, 1024, False),
    (triton_dequant.MODE_E5M2, 320, False),
])
def test_kernel_compiles_for_hopper_without_a_gpu(mode, group, has_zero):
    compiled = _compile_for(90, mode, group, has_zero)
    assert compiled.asm["cubin"]
    if mode == triton_dequant.MODE_E4M3:  # decoded by the hardware conversion, not emulated
        assert "e4m3" in compiled.asm["ptx"]


def test_float8_codes_do_not_compile_below_compute_capability_8_9():
    """Why `supports` refuses float8 on older GPUs: Triton cannot lower the conversion there."""
    from triton.compiler.errors import CompilationError

    with pytest.raises(CompilationError):
        _compile_for(80, triton_dequant.MODE_E4M3, 1024)
    assert _compile_for(80, triton_dequant.MODE_BYTE, 1024).asm["cubin"]  # one-byte integers are fine
