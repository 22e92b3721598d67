"""NNCF engine: weight compression of tiny FLUX / SDXL UNet / CLIP on CPU, with its options."""
import pytest
import torch

from engines.base import Unsupported
from engines.nncf import NNCFEngine, decompressors, example_inputs

CPU = torch.device("cpu")
# dtype -> (minimum byte ratio on tiny FLUX, maximum relative output error vs BF16)
EXPECT = {"int8": (1.85, 0.03), "int8_sym": (1.85, 0.03), "int4": (3.3, 0.15), "int4_sym": (3.3, 0.15)}


def engine(dtype, **options):
    eng = NNCFEngine(dtype, options=options)
    eng.check_platform(CPU)
    return eng


@pytest.mark.parametrize("dtype", NNCFEngine.dtypes, ids=lambda d: f"nncf-{d}")
def test_post_mode_flux(tiny, dtype):
    tiny.check_post_mode(engine(dtype), "transformer", *EXPECT[dtype])


@pytest.mark.parametrize("quant_conv", [False, True], ids=["linears", "quant-conv"])
@pytest.mark.parametrize("dtype", ["int8_sym", "int4"], ids=lambda d: f"nncf-{d}")
def test_post_mode_unet(tiny, dtype, quant_conv):
    eng = engine(dtype, quant_conv=quant_conv)
    model = eng.quantize("unet", tiny.make("unet"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all((m.weight.dtype in (torch.int8, torch.uint8)) == quant_conv for m in convs)
    counts = eng.verify("unet", model)
    assert counts["quantized_modules"] == counts["target_modules"]
    ratio, error = tiny.compare("unet", model)
    assert ratio > (1.9 if quant_conv and dtype == "int8_sym" else 1.2), ratio
    assert error <= 2 * EXPECT[dtype][1]


def test_text_encoder(tiny):
    eng = engine("int8_sym")
    model = eng.quantize("text_encoder", tiny.make("text_encoder"))
    assert eng.verify("text_encoder", model)["quantized_modules"] > 0
    ratio, error = tiny.compare("text_encoder", model)
    assert ratio > 1.8 and error < 0.05


def test_error_grows_as_bits_shrink(tiny):
    errors = {d: tiny.compare("transformer", engine(d).quantize("transformer", tiny.make("transformer")))[1]
              for d in ("int8_sym", "int4_sym")}
    assert errors["int8_sym"] < errors["int4_sym"] / 4


def test_group_size_auto_and_explicit():
    assert engine("int4").group_size() == 64
    assert engine("int4", group_size=-1).group_size() == -1
    assert engine("int4_sym", group_size=32).group_size() == 32
    assert engine("int8").group_size() is None
    with pytest.raises(Unsupported, match="per output channel"):
        engine("int8_sym", group_size=32)


def test_group_size_changes_the_layout(tiny):
    grouped = engine("int4", group_size=32).quantize("transformer", tiny.make("transformer"))
    per_channel = engine("int4", group_size=-1).quantize("transformer", tiny.make("transformer"))
    # 256-wide layer: 8 groups of 32 per output row vs one scale per row
    scales = lambda model: [d._scale.numel() for d in decompressors(model)]
    assert sum(scales(grouped)) > sum(scales(per_channel))
    assert tiny.compare("transformer", grouped)[1] < tiny.compare("transformer", per_channel)[1]


def test_decompress_fp32(tiny):
    model = engine("int8_sym", decompress_fp32=True).quantize("transformer", tiny.make("transformer"))
    assert {d._scale.dtype for d in decompressors(model)} == {torch.float32}
    assert tiny.compare("transformer", model)[1] < EXPECT["int8_sym"][1]


def test_int8_matmul_is_declared_unsupported():
    with pytest.raises(Unsupported, match="not implemented"):
        engine("int8_sym", int8_matmul=True)
    with pytest.raises(Unsupported, match="symmetric"):
        engine("int8", int8_matmul=True)


@pytest.mark.parametrize("dtype", ["int8", "int4_sym"], ids=lambda d: f"nncf-{d}")
def test_compile_decompress_matches_eager(tiny, dtype):
    eager = engine(dtype).quantize("transformer", tiny.make("transformer"))
    compiled = engine(dtype, compile_decompress=True).quantize("transformer", tiny.make("transformer"))
    inputs = tiny.reference("transformer")[0]
    # inductor keeps NNCF's FP16 decompression arithmetic in FP32 registers: close, not bitwise
    assert tiny.rel_error(tiny.output(compiled, inputs), tiny.output(eager, inputs)) < 0.01


def test_compile_decompress_is_auto_off_on_cpu():
    assert engine("int8").compile_decompress() is False
    assert engine("int8", compile_decompress=True).compile_decompress() is True


def test_example_inputs_cover_the_pipeline_components(tiny):
    for name in ("transformer", "unet", "text_encoder"):
        model = tiny.make(name)
        assert tiny.output(model, example_inputs(model)).isfinite().all()
    with pytest.raises(Unsupported, match="no builder"):
        example_inputs(torch.nn.Linear(4, 4))


def test_import_is_lazy(imported_modules):
    assert "nncf" not in imported_modules("engines.nncf")
