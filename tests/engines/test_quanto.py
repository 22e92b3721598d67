"""optimum-quanto engine: every dtype runs on CPU, post and pre mode."""
import pytest
import torch

from engines.quanto import QuantoEngine

CPU = torch.device("cpu")
# dtype -> (minimum byte ratio on tiny FLUX, maximum relative output error vs BF16)
EXPECT = {"int8": (1.9, 0.03), "float8": (1.9, 0.06), "int4": (3.3, 0.15), "int2": (5.5, 0.6)}


def engine(dtype, mode="post"):
    eng = QuantoEngine(dtype, mode=mode)
    eng.check_platform(CPU)
    return eng


@pytest.mark.parametrize("dtype", QuantoEngine.dtypes, ids=lambda d: f"quanto-{d}")
def test_post_mode_flux(tiny, dtype):
    tiny.check_post_mode(engine(dtype), "transformer", *EXPECT[dtype])


@pytest.mark.parametrize("dtype", [
    pytest.param("int8", marks=pytest.mark.xfail(
        not torch.cuda.is_available(), raises=RuntimeError, strict=True,
        reason="upstream: quanto's CPU int8 matmul (torch._weight_int8pack_mm) rejects the "
               "non-contiguous activations of the UNet's proj_in")),
    "float8", "int4", "int2"], ids=lambda d: f"quanto-{d}")
def test_post_mode_unet_convs_too(tiny, dtype):
    eng = engine(dtype)
    model = eng.quantize("unet", tiny.make("unet"))
    counts = eng.verify("unet", model)
    assert counts["quantized_modules"] == counts["target_modules"]
    assert not any(type(m) in (torch.nn.Linear, torch.nn.Conv2d) for m in model.modules())
    ratio, error = tiny.compare("unet", model)
    assert ratio >= EXPECT[dtype][0] - 0.1  # convolutions are quantized too
    assert error <= 2 * EXPECT[dtype][1]


def test_error_grows_as_bits_shrink(tiny):
    errors = {d: tiny.compare("transformer", engine(d).quantize("transformer", tiny.make("transformer")))[1]
              for d in ("int8", "int4", "int2")}
    assert errors["int8"] < errors["int4"] < errors["int2"]


@pytest.mark.parametrize("dtype", QuantoEngine.dtypes, ids=lambda d: f"quanto-{d}")
def test_pre_mode_flux_matches_post_mode(tiny, saved_models, dtype):
    from diffusers import FluxTransformer2DModel
    eng = engine(dtype, mode="pre")
    model = eng.load_component("transformer", FluxTransformer2DModel, str(saved_models), torch_dtype=torch.bfloat16)
    eng.verify("transformer", model)
    post = engine(dtype).quantize("transformer", tiny.make("transformer"))
    assert tiny.compare("transformer", model) == pytest.approx(tiny.compare("transformer", post), rel=1e-3)


def test_pre_mode_text_encoder_uses_transformers_config(tiny, saved_models):
    from transformers import CLIPTextModel
    eng = engine("int8", mode="pre")
    model = eng.load_component("text_encoder", CLIPTextModel, str(saved_models), torch_dtype=torch.bfloat16)
    counts = eng.verify("text_encoder", model)
    assert counts["quantized_modules"] == counts["target_modules"] > 0
    ratio, error = tiny.compare("text_encoder", model)
    assert ratio > 1.3 and error < 0.05


def test_import_is_lazy(imported_modules):
    assert "optimum" not in imported_modules("engines.quanto")
