"""Quantized attention (option quantized_attention): the quantization, the fp32 emulation, the Triton kernel
(interpreted on CPU and compiled for Hopper without a GPU), the FLUX processor and the engine's refusals."""
import textwrap

import pytest
import torch
import torch.nn.functional as F

from engines.base import Unsupported
from engines.registry import get_engine_class
from engines.sdnq import attention
from tests.engines.sdnq.triton_tools import compile_for, run_interpreted

SDNQ = get_engine_class("sdnq")


def _qkv(b=1, h=2, s=96, d=64, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
    return q.bfloat16(), (k + offset).bfloat16(), v.bfloat16()


def _rel(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def test_quantized_operands_have_their_documented_layouts():
    q, k, v = _qkv()
    qi, qs, ki, ks, vq, vs = attention.quantize(q, k, v, pv_fp8=True)
    assert qi.dtype == ki.dtype == torch.int8 and vq.dtype == torch.float8_e4m3fn
    assert qs.shape == ks.shape == (1, 2, 96) and vs.shape == (1, 2, 64)
    assert int(qi.abs().amax(-1).min()) == 127  # each token's largest value takes the top code
    assert torch.allclose(ki.float().mean(2), torch.zeros(1, 2, 64), atol=2.0)  # centred K
    _, _, _, _, vb, ones = attention.quantize(q, k, v, pv_fp8=False)
    assert vb is v and torch.equal(ones, torch.ones(1, 2, 64))


@pytest.mark.parametrize("pv_fp8, limit", [(False, 0.02), (True, 0.06)], ids=["int8", "int8-fp8"])
def test_quantized_attention_is_close_to_sdpa_and_a_key_offset_changes_nothing(pv_fp8, limit):
    q, k, v = _qkv()
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = attention.attention(q, k, v, pv_fp8=pv_fp8)
    assert out.dtype == torch.bfloat16 and _rel(out, ref) < limit
    q2, k2, v2 = _qkv(offset=3.0)  # the same keys plus a per-channel constant: the softmax is unchanged
    assert _rel(attention.attention(q2, k2, v2, pv_fp8=pv_fp8), ref) < limit


def test_fp8_pv_costs_more_error_than_int8_qk_alone():
    q, k, v = _qkv(s=256)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert _rel(attention.attention(q, k, v, pv_fp8=False), ref) < _rel(attention.attention(q, k, v), ref)


KERNEL = textwrap.dedent("""
    import math, torch
    from engines.sdnq import attention, triton_attention as ta
    try:
        ta._kernel()  # the autotuned wrapper needs a GPU driver; the raw kernel does not
    except Exception:
        pass
    g = torch.Generator().manual_seed(0)
    # ragged S: masked rows and keys; the interpreter rounds fp32 to fp8 unlike torch (and the GPU), which the
    # second limit allows for
    for s, pv_fp8, limit in [(40, False, 1e-2), (72, True, 0.1)]:
        q, k, v = (torch.randn(1, 2, s, 64, generator=g).bfloat16() for _ in range(3))
        qi, qs, ki, ks, vq, vs = attention.quantize(q, k, v, pv_fp8)
        ref = attention.emulate(qi, qs, ki, ks, vq, vs, 64 ** -0.5, torch.float32)
        out = torch.empty(2, s, 64)
        vt = vq.transpose(-1, -2).reshape(2, 64, s).contiguous()
        if not pv_fp8:  # the interpreter multiplies bf16 as its raw bits: V in fp32 stands for it
            vt = vt.float()
        grid = (-(-s // 16), 2)
        qk = qs.reshape(2, s) * (64 ** -0.5 / math.log(2))
        ta.RAW_KERNEL[grid](qi.reshape(2, s, 64), qk, ki.reshape(2, s, 64), ks.reshape(2, s), vt,
                            vs.reshape(2, 64), out, s, D=64, P_SCALE=ta.P_SCALE, BLOCK_M=16, BLOCK_N=16)
        err = float((out - ref.reshape(2, s, 64)).norm() / ref.norm())
        assert err < limit, (s, pv_fp8, err)
    print("ok")
""")


def test_the_kernel_in_the_interpreter_matches_the_emulation():
    pytest.importorskip("triton")
    run_interpreted(KERNEL)


@pytest.mark.parametrize("v_type", ["*fp8e4nv", "*bf16"])
def test_the_kernel_compiles_for_hopper_without_a_gpu(v_type):
    pytest.importorskip("triton")
    from engines.sdnq import triton_attention
    try:
        triton_attention._kernel()
    except Exception:
        pass
    signature = {"q_ptr": "*i8", "qs_ptr": "*fp32", "k_ptr": "*i8", "ks_ptr": "*fp32", "vt_ptr": v_type,
                 "vs_ptr": "*fp32", "o_ptr": "*bf16", "S": "i32"}
    constants = {"D": 128, "P_SCALE": triton_attention.P_SCALE, "BLOCK_M": 128, "BLOCK_N": 64}
    compiled = compile_for(triton_attention.RAW_KERNEL, 90, signature, constants)
    assert compiled.asm["cubin"]
    if v_type == "*fp8e4nv":  # both products on the tensor cores: an int8 and an fp8 warp-group MMA
        assert "wgmma" in compiled.asm["ptx"] and "e4m3" in compiled.asm["ptx"]


@pytest.mark.parametrize("fuse", [False, True], ids=["separate", "fused-qkv"])
def test_the_flux_processor_is_diffusers_attention_when_given_sdpa(tiny, monkeypatch, fuse):
    plain = SDNQ("int8", options={"fuse_qkv": fuse}).quantize("transformer", tiny.make_flux())
    ref = tiny.run(plain, "flux")
    model = SDNQ("int8", options={"fuse_qkv": fuse, "quantized_attention": "int8"}).quantize(
        "transformer", tiny.make_flux())
    assert type(model.transformer_blocks[0].attn.processor).__name__ == "FluxQuantizedAttnProcessor"
    monkeypatch.setattr(attention, "attention", lambda q, k, v, pv_fp8: F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(tiny.run(model, "flux"), ref)


@pytest.mark.parametrize("mode, limit", [("int8", 0.05), ("int8-fp8", 0.12)])
def test_a_flux_transformer_with_quantized_attention_stays_close(tiny, mode, limit):
    engine = SDNQ("int8", options={"quantized_attention": mode})
    model = engine.quantize("transformer", tiny.make_flux())
    ref = tiny.run(SDNQ("int8").quantize("transformer", tiny.make_flux()), "flux")
    assert 0 < tiny.rel_err(tiny.run(model, "flux"), ref) < limit
    assert engine.report()["sdnq"]["components"]["transformer"]["quantized_attention"] == 2


def test_a_denoiser_without_flux_attention_is_unsupported(tiny):
    engine = SDNQ("int8", options={"quantized_attention": "int8"})
    with pytest.raises(Unsupported, match="FluxAttention"):
        engine.quantize("unet", tiny.make_unet())
    engine.quantize("text_encoder", torch.nn.Sequential(torch.nn.Linear(16, 16)).bfloat16())  # not a denoiser


def test_a_model_whose_pipeline_always_masks_is_unsupported():
    from diffusers import ChromaTransformer2DModel

    model = ChromaTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                     joint_attention_dim=32, axes_dims_rope=(4, 6, 6), approximator_num_channels=16,
                                     approximator_hidden_dim=64, approximator_layers=1, in_channels=16,
                                     patch_size=1).bfloat16()
    with pytest.raises(Unsupported, match="attention mask"):
        SDNQ("int8", options={"quantized_attention": "int8"}).quantize("transformer", model)
