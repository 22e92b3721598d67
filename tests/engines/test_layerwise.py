"""FP8 layerwise casting: float8 storage, compute in the engine's compute dtype, on CPU."""
import pytest
import torch

from engines.layerwise import LayerwiseEngine

CPU = torch.device("cpu")
MAX_ERROR = {"float8_e4m3fn": 0.05, "float8_e5m2": 0.1}


def engine(dtype, **options):
    eng = LayerwiseEngine(dtype, options=options)
    eng.check_platform(CPU)
    return eng


@pytest.mark.parametrize("name", ["transformer", "unet", "text_encoder"])
@pytest.mark.parametrize("dtype", LayerwiseEngine.dtypes, ids=lambda d: f"layerwise-{d}")
def test_storage_is_float8(tiny, dtype, name):
    eng = engine(dtype)
    model = eng.quantize(name, tiny.make(name))
    done, targets = eng.count_quantized(model)
    assert 0 < done <= targets
    assert eng.verify(name, model)["quantized_modules"] == done
    ratio, error = tiny.compare(name, model)
    assert ratio > 1.5, ratio  # norms, embedders and proj_in/out stay BF16
    assert error <= MAX_ERROR[dtype] * (1 if name == "transformer" else 3), error
    # weights are back in float8 after a forward
    assert any(p.dtype == eng.storage_dtype for p in model.parameters())


def test_default_skip_patterns_keep_norms_and_proj_out(tiny):
    model = engine("float8_e4m3fn").quantize("transformer", tiny.make("transformer"))
    assert model.proj_out.weight.dtype == torch.bfloat16
    assert model.norm_out.linear.weight.dtype == torch.bfloat16
    assert model.transformer_blocks[0].ff.net[2].weight.dtype == torch.float8_e4m3fn


def test_custom_skip_patterns_replace_the_defaults(tiny):
    model = engine("float8_e4m3fn", skip_patterns=["ff"]).quantize("transformer", tiny.make("transformer"))
    assert model.transformer_blocks[0].ff.net[2].weight.dtype == torch.bfloat16
    assert model.proj_out.weight.dtype == torch.float8_e4m3fn


def test_e4m3_is_closer_than_e5m2(tiny):
    errors = {d: tiny.compare("transformer", engine(d).quantize("transformer", tiny.make("transformer")))[1]
              for d in LayerwiseEngine.dtypes}
    assert errors["float8_e4m3fn"] < errors["float8_e5m2"]


def test_compute_dtype_is_the_engines(tiny):
    eng = LayerwiseEngine("float8_e4m3fn", compute_dtype=torch.float32)
    model = eng.quantize("transformer", tiny.make("transformer").float())  # an FP32 run
    seen = []
    layer = model.transformer_blocks[0].ff.net[2]
    # F.linear needs one dtype: an FP32 output means the weight was upcast to FP32 for the matmul
    layer.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    inputs = tiny.reference("transformer")[0]
    tiny.output(model, {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                        for k, v in inputs.items()})
    assert seen == [torch.float32]
    assert layer.weight.dtype == torch.float8_e4m3fn


def test_import_is_lazy(imported_modules):
    assert "diffusers" not in imported_modules("engines.layerwise")
