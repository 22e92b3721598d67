"""Save a quantized model and load it back: bit-identical outputs and storage."""
import copy

import pytest
import torch
from torch import nn

from engines.registry import get_engine_class
from engines.sdnq import SDNQConfig, quantize_model
from engines.sdnq.serialize import load_quantized, save_quantized

CASES = [("int8", {}), ("int6", {}), ("uint4", {}), ("uint1", {}), ("float8_e4m3fn", {}),
         ("int8", {"use_quantized_matmul": True}), ("float8_e5m2", {"use_quantized_matmul": True})]


def case_id(case):
    wtype, opts = case
    return f"w-{wtype}" + ("-qmm" if opts else "")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_flux_round_trip_is_bit_identical(case, tiny, tmp_path):
    wtype, opts = case
    engine = get_engine_class("sdnq")(wtype, "post", opts)
    model = engine.quantize("transformer", tiny.make_flux())
    save_quantized(model, tmp_path / "transformer")
    loaded = load_quantized(tmp_path / "transformer")
    assert type(loaded) is type(model)
    assert torch.equal(tiny.run(loaded, "flux"), tiny.run(model, "flux"))
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_unet_with_convs_round_trip(tiny, tmp_path):
    engine = get_engine_class("sdnq")("int4", "post", {"quant_conv": True})
    model = engine.quantize("unet", tiny.make_unet())
    save_quantized(model, tmp_path / "unet")
    loaded = load_quantized(tmp_path / "unet")
    assert torch.equal(tiny.run(loaded, "unet"), tiny.run(model, "unet"))


def test_engine_pre_mode_reads_a_saved_sdnq_checkpoint(tiny, tmp_path):
    from diffusers import FluxTransformer2DModel
    engine = get_engine_class("sdnq")("uint4", "pre")
    model = engine.quantize("transformer", tiny.make_flux())
    save_quantized(model, tmp_path / "transformer")
    loaded = engine.load_component("transformer", FluxTransformer2DModel, str(tmp_path))
    assert engine.report()["sdnq"]["components"]["transformer"]["how"] == "sdnq-checkpoint"
    assert torch.equal(tiny.run(loaded, "flux"), tiny.run(model, "flux"))


def test_plain_module_needs_a_skeleton(tmp_path):
    model = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 16)).bfloat16()
    quantize_model(model, SDNQConfig("int5"))
    save_quantized(model, tmp_path, SDNQConfig("int5"))
    with pytest.raises(ValueError, match="skeleton"):
        load_quantized(tmp_path)
    skeleton = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 16)).to("meta")
    loaded = load_quantized(tmp_path, model=skeleton)
    x = torch.randn(3, 32).bfloat16()
    assert torch.equal(loaded(x), model(x))


def test_refuses_to_save_with_lora_loaded(tiny, tmp_path):
    model = get_engine_class("sdnq")("int8").quantize("transformer", tiny.make_flux())
    layer = model.transformer_blocks[0].attn.to_q
    model.load_lora_adapter({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, layer.in_features),
                             "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(layer.out_features, 2)},
                            adapter_name="a", prefix="transformer")
    with pytest.raises(ValueError, match="LoRA"):
        save_quantized(copy.copy(model), tmp_path)
