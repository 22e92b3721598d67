"""Fused projections (option fuse_qkv): exact, smaller in layers not in bytes, refused with a LoRA."""
import pytest
import torch
from torch import nn

from engines.base import Unsupported, module_nbytes
from engines.registry import get_engine_class
from engines.sdnq.config import SDNQConfig
from engines.sdnq.fuse import compatible, concat, fuse_projections
from engines.sdnq.layers import SDNQLinear

SDNQ = get_engine_class("sdnq")


def _layers(wtype, rows=(16, 16, 32), k=32, bias=True, qmm=False):
    g = torch.Generator().manual_seed(0)
    cfg = SDNQConfig(wtype, group_size=16, use_quantized_matmul=qmm)
    return [SDNQLinear.from_weight(torch.randn(r, k, generator=g).bfloat16(),
                                   torch.randn(r, generator=g).bfloat16() if bias else None, cfg) for r in rows]


@pytest.mark.parametrize("wtype", ["int8", "uint4", "int4", "float8_e4m3fn", "uint8"])
def test_a_fused_layer_is_its_parts_side_by_side_bit_for_bit(wtype):
    parts = _layers(wtype)
    x = torch.randn(3, 5, 32).bfloat16()
    fused = concat(parts)
    assert fused.out_features == 64 and fused.in_features == 32
    assert torch.equal(fused(x), torch.cat([p(x) for p in parts], dim=-1))
    assert module_nbytes(fused) == sum(module_nbytes(p) for p in parts)


@pytest.mark.parametrize("wtype", ["int8", "float8_e4m3fn"])
def test_a_fused_quantized_matmul_layer_matches_its_parts(wtype):
    parts = _layers(wtype, qmm=True)
    assert all(p.use_quantized_matmul for p in parts)
    x = torch.randn(7, 32).bfloat16()
    assert torch.equal(concat(parts)(x), torch.cat([p(x) for p in parts], dim=-1))


def test_incompatible_parts_are_not_fused():
    a, b = _layers("int8", rows=(16, 16))
    (c,) = _layers("uint4", rows=(16,))
    assert not compatible([a, c]) and not compatible([a, nn.Linear(32, 16)])
    (odd,) = _layers("uint4", rows=(3,), k=20)  # 60 codes: not whole 8-code chunks
    assert not compatible([odd, odd])
    with pytest.raises(ValueError, match="fused projections"):
        concat([a, c])
    assert compatible([a, b])


@pytest.mark.parametrize("qmm", [False, True], ids=["weight-only", "qmm"])
def test_a_flux_transformer_with_fused_projections_computes_the_same(tiny, qmm):
    options = {"use_quantized_matmul": qmm}
    plain = SDNQ("int8", options=options).quantize("transformer", tiny.make_flux())
    engine = SDNQ("int8", options={**options, "fuse_qkv": True})
    fused = engine.quantize("transformer", tiny.make_flux())
    attn = fused.transformer_blocks[0].attn
    assert attn.fused_projections and isinstance(attn.to_qkv, SDNQLinear) and isinstance(attn.to_added_qkv, SDNQLinear)
    assert not hasattr(attn, "to_q") and not hasattr(attn, "add_k_proj")
    single = fused.single_transformer_blocks[0].attn
    assert single.fused_projections and not hasattr(single, "to_v")
    assert module_nbytes(fused) == module_nbytes(plain)
    assert engine.report()["sdnq"]["components"]["transformer"]["fused_projections"] == 3
    assert torch.equal(tiny.run(fused, "flux"), tiny.run(plain, "flux"))


def test_an_attention_with_an_unquantized_projection_stays_unfused(tiny):
    model = SDNQ("int8", options={}).quantize("transformer", tiny.make_flux())
    model.transformer_blocks[0].attn.add_v_proj = nn.Linear(32, 32).bfloat16()
    assert fuse_projections(model) == 1  # the single block only
    assert not model.transformer_blocks[0].attn.fused_projections


def test_models_without_fusable_attention_are_left_alone(tiny):
    engine = SDNQ("int8", options={"fuse_qkv": True})
    unet = engine.quantize("unet", tiny.make_unet())
    assert hasattr(unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_q")
    assert "fused_projections" not in engine.report()["sdnq"]["components"]["unet"]


def test_fused_projections_refuse_a_lora():
    with pytest.raises(Unsupported, match="fuse_qkv"):
        SDNQ("int8", options={"fuse_qkv": True}).check_lora(False, torch.device("cpu"))


def test_a_fused_model_is_not_saved(tiny, tmp_path):
    from engines.sdnq.serialize import save_quantized

    model = SDNQ("int8", options={"fuse_qkv": True}).quantize("transformer", tiny.make_flux())
    with pytest.raises(ValueError, match="fused"):
        save_quantized(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
