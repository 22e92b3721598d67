"""GGUF engine: in-house conversion round trip, error bounds, user files (k-quants), bad files."""
import numpy as np
import pytest
import torch

from engines.base import Unsupported
from engines.gguf import GGUFEngine
from engines.gguf_convert import CONVERTIBLE

CPU = torch.device("cpu")
# type -> (bits for the ratio check, maximum relative output error vs BF16 on tiny FLUX)
EXPECT = {"q8_0": (1.8, 0.02), "q5_1": (2.5, 0.06), "q5_0": (2.7, 0.06), "q4_1": (3.0, 0.12), "q4_0": (3.3, 0.12)}
# quantization step of one block, from its values: error bound = about one step
STEP = {"q8_0": lambda b: np.abs(b).max(-1) / 127, "q5_0": lambda b: np.abs(b).max(-1) / 16,
        "q4_0": lambda b: np.abs(b).max(-1) / 8, "q5_1": lambda b: np.ptp(b, -1) / 31,
        "q4_1": lambda b: np.ptp(b, -1) / 15}


def assert_same_up_to_fp16(actual, reference):
    """diffusers dequantizes in float16 (the scales' type); the gguf package in float32."""
    np.testing.assert_allclose(actual, reference, rtol=0, atol=2 ** -9 * np.abs(reference).max())


def engine(dtype, mode="pre", cache_dir=None, **options):
    eng = GGUFEngine(dtype, mode=mode, options=options, cache_dir=cache_dir)
    eng.check_platform(CPU)
    return eng


def load(eng, root):
    from diffusers import FluxTransformer2DModel
    return eng.load_component("transformer", FluxTransformer2DModel, str(root), torch_dtype=torch.bfloat16)


def gguf_linears(model):
    from diffusers.quantizers.gguf.utils import GGUFLinear
    return {n: m for n, m in model.named_modules() if isinstance(m, GGUFLinear)}


@pytest.fixture(scope="module")
def converted(saved_models, tmp_path_factory):
    """dtype -> (engine, model loaded from its converted file) for every convertible type."""
    cache = tmp_path_factory.mktemp("gguf-cache")
    out = {}
    for dtype in CONVERTIBLE:
        eng = engine(dtype, cache_dir=str(cache))
        out[dtype] = (eng, load(eng, saved_models))
    return out


@pytest.mark.parametrize("dtype", CONVERTIBLE, ids=lambda d: f"gguf-{d}")
def test_convert_load_forward_round_trip(tiny, converted, dtype):
    eng, model = converted[dtype]
    done, targets = eng.count_quantized(model)
    assert done == targets - 1  # x_embedder's 16-wide rows are not a multiple of the 32-value block
    eng.verify("transformer", model)
    ratio, error = tiny.compare("transformer", model)
    min_ratio, max_error = EXPECT[dtype]
    assert ratio >= min_ratio, ratio
    assert error <= max_error, error


@pytest.mark.parametrize("dtype", CONVERTIBLE, ids=lambda d: f"gguf-{d}")
def test_dequantized_weights_within_the_format_bound(tiny, converted, dtype):
    import gguf
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor
    _, model = converted[dtype]
    originals = tiny.make("transformer").state_dict()
    for name, layer in gguf_linears(model).items():
        if layer.weight.quant_type.name in ("F32", "F16", "BF16"):
            continue
        original = originals[f"{name}.weight"].float().numpy()
        restored = dequantize_gguf_tensor(layer.weight).float().numpy()
        # diffusers' torch dequantization == the gguf package's reference dequantization
        reference = gguf.quants.dequantize(layer.weight.as_tensor().numpy(), layer.weight.quant_type)
        assert_same_up_to_fp16(restored, reference)
        blocks = original.reshape(original.shape[0], -1, 32)
        worst = np.abs(reference.reshape(blocks.shape) - blocks).max(-1)
        assert (worst <= 1.05 * STEP[dtype](blocks) + 1e-7).all(), name


def test_error_grows_as_bits_shrink(tiny, converted):
    errors = {d: tiny.compare("transformer", converted[d][1])[1] for d in ("q8_0", "q5_0", "q4_0")}
    assert errors["q8_0"] < errors["q5_0"] < errors["q4_0"]


def test_unet_linears_round_trip(tiny, saved_models, tmp_path):
    from diffusers import UNet2DConditionModel
    eng = engine("q8_0", cache_dir=str(tmp_path))
    model = eng.load_component("unet", UNet2DConditionModel, str(saved_models), torch_dtype=torch.bfloat16)
    assert eng.verify("unet", model)["quantized_modules"] > 0
    ratio, error = tiny.compare("unet", model)
    assert ratio > 1.2 and error < 0.03  # convolutions stay BF16: GGUF in diffusers is Linear-only


def test_converted_file_is_cached_by_content_hash(tiny, saved_models, tmp_path):
    from diffusers import FluxTransformer2DModel
    eng = engine("q4_0", cache_dir=str(tmp_path / "cache"))
    first = eng.gguf_path("transformer", FluxTransformer2DModel, str(saved_models))
    stamp = first.stat().st_mtime_ns
    assert eng.gguf_path("transformer", FluxTransformer2DModel, str(saved_models)) == first
    assert first.stat().st_mtime_ns == stamp  # not converted again
    other = tiny.make("transformer")
    with torch.no_grad():
        other.proj_out.weight.mul_(2)
    other.save_pretrained(tmp_path / "other" / "transformer")
    second = eng.gguf_path("transformer", FluxTransformer2DModel, str(tmp_path / "other"))
    assert second != first and second.exists()


def test_post_mode_matches_the_file(tiny, converted):
    eng = engine("q4_1", mode="post")
    model = eng.quantize("transformer", tiny.make("transformer"))
    assert eng.count_quantized(model) == converted["q4_1"][0].count_quantized(converted["q4_1"][1])
    assert tiny.compare("transformer", model) == pytest.approx(tiny.compare("transformer", converted["q4_1"][1]))


# -- user files ------------------------------------------------------------------------------
# byte offsets of the float16 super-block scales in each k-quant block, to make random blocks sane
_SCALE_OFFSETS = {"q4_k": (0, 2), "q6_k": (208,), "q2_k": (80, 82)}


def write_user_file(path, model, quant):
    """A GGUF file as a user might bring: 256-wide Linear weights in a k-quant (random blocks with
    small scales), everything else F32."""
    import gguf
    qt = gguf.GGMLQuantizationType[quant.upper()]
    block, size = gguf.GGML_QUANT_SIZES[qt]
    rng = np.random.default_rng(0)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    writer = gguf.GGUFWriter(str(path), arch="flux")
    for name, tensor in model.state_dict().items():
        if name in linear and tensor.shape[-1] % block == 0:
            rows, cols = tensor.shape
            raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
            for offset in _SCALE_OFFSETS[quant]:
                raw[:, offset:offset + 2] = np.frombuffer(np.float16(1e-3).tobytes(), np.uint8)
            writer.add_tensor(name, raw.reshape(rows, -1), raw_dtype=qt)
        else:
            writer.add_tensor(name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("quant", sorted(_SCALE_OFFSETS), ids=lambda q: f"gguf-file-{q}")
def test_user_file_with_k_quants(tiny, saved_models, tmp_path, quant):
    import gguf
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor
    path = write_user_file(tmp_path / f"user-{quant}.gguf", tiny.make("transformer"), quant)
    eng = engine(quant, file=str(path))
    model = load(eng, saved_models)
    assert eng.verify("transformer", model)["quantized_modules"] == 3  # the three 256-wide linears
    reader = gguf.GGUFReader(str(path))
    layers = gguf_linears(model)
    for t in reader.tensors:
        layer = layers.get(t.name.removesuffix(".weight"))
        if layer is not None and t.tensor_type.name.lower() == quant:
            expected = gguf.quants.dequantize(t.data, t.tensor_type)
            assert_same_up_to_fp16(dequantize_gguf_tensor(layer.weight).float().numpy(), expected)
    assert tiny.output(model, tiny.reference("transformer")[0]).isfinite().all()


def test_user_file_dtype_must_match_its_contents(tiny, saved_models, tmp_path):
    path = write_user_file(tmp_path / "user.gguf", tiny.make("transformer"), "q6_k")
    with pytest.raises(ValueError, match="mostly q6_k, not q4_k"):
        load(engine("q4_k", file=str(path)), saved_models)


def test_k_quants_need_a_file_and_a_file_needs_pre_mode(tmp_path):
    with pytest.raises(Unsupported, match="no quantizer for k-quants"):
        engine("q4_k")
    with pytest.raises(Unsupported, match="needs pre mode"):
        engine("q8_0", mode="post", file=str(tmp_path / "x.gguf"))


@pytest.mark.parametrize("damage", ["truncated-header", "truncated-data", "not-gguf", "foreign", "missing"])
def test_bad_file_is_a_clear_error(converted, saved_models, tmp_path, damage):
    import gguf
    from diffusers import FluxTransformer2DModel
    good = converted["q8_0"][0].gguf_path("transformer", FluxTransformer2DModel, str(saved_models))
    data = good.read_bytes()
    path = tmp_path / f"{damage}.gguf"
    if damage == "truncated-header":
        path.write_bytes(data[:300])
        expected = "unreadable|truncated"
    elif damage == "truncated-data":
        path.write_bytes(data[: len(data) - 1000])
        expected = "unreadable|truncated"
    elif damage == "not-gguf":
        path.write_bytes(b"PK\x03\x04" + data[4:2000])
        expected = "not a GGUF file"
    elif damage == "foreign":
        writer = gguf.GGUFWriter(str(path), arch="llama")
        writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        expected = "different model"
    else:
        expected = "not found"
    with pytest.raises(ValueError, match=expected) as err:
        load(engine("q8_0", file=str(path)), saved_models)
    assert str(path) in str(err.value)


def test_import_is_lazy(imported_modules):
    assert "gguf" not in imported_modules("engines.gguf")
