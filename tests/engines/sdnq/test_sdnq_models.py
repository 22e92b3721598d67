"""Tiny FLUX transformer and tiny SDXL-style UNet through the engine, every dtype, post and pre mode."""
import copy
import math

import pytest
import torch

from engines.base import module_nbytes
from engines.registry import get_engine_class
from engines.sdnq.dtypes import ALL_TYPES, INT_TYPES, UINT_TYPES, weight_type
from engines.sdnq.layers import SDNQLayerMixin
from engines.sdnq.pack import packed_numel

# Output error vs BF16 that each bit width must stay under (tiny random models, bf16 compute).
MAX_ERR = {8: 0.06, 7: 0.1, 6: 0.2, 5: 0.35, 4: 0.5, 3: 0.6, 2: 0.9, 1: 1.5}
MAX_ERR_FP8 = {"float8_e4m3fn": 0.15, "float8_e4m3fnuz": 0.15, "float8_e5m2": 0.3, "float8_e5m2fnuz": 0.3}
KINDS = {"flux": ("transformer", {}), "unet": ("unet", {"quant_conv": True})}


def wid(wtype):
    return f"w-{wtype}"


def _engine(wtype, mode, kind):
    return get_engine_class("sdnq")(wtype, mode, KINDS[kind][1])


@pytest.fixture(scope="module")
def references(tiny):
    out = {}
    for kind in KINDS:
        model = tiny.make[kind]()
        out[kind] = (model, tiny.run(model, kind), module_nbytes(model))
    return out


def _expected_layer_bytes(layer) -> int:
    """Packed codes at exactly bits/8 bytes per weight, plus scales, zero points, bias."""
    wt = weight_type(layer.weight_type)
    n = math.prod(layer.quant_shape)
    side = layer.scale.numel() * layer.scale.element_size() * (2 if layer.zero_point is not None else 1)
    bias = 0 if layer.bias is None else layer.bias.numel() * layer.bias.element_size()
    return packed_numel(n, wt.bits) + side + bias


def _check(model, engine, kind, wtype, references, tiny):
    base, ref, base_bytes = references[kind]
    done, targets = engine.count_quantized(model)
    assert done == targets > 0
    engine.verify(KINDS[kind][0], model)
    err = tiny.rel_err(tiny.run(model, kind), ref)
    wt = weight_type(wtype)
    assert err < (MAX_ERR_FP8[wtype] if wt.kind == "float" else MAX_ERR[wt.bits]), err
    # stored bytes: every quantized layer is exactly its packed size; the rest is unchanged
    layers = [m for m in model.modules() if isinstance(m, SDNQLayerMixin)]
    plain = base_bytes - sum(math.prod(m.quant_shape) * 2 + (0 if m.bias is None else m.bias.numel() * 2)
                             for m in layers)
    assert module_nbytes(model) == plain + sum(_expected_layer_bytes(m) for m in layers)
    assert module_nbytes(model) < base_bytes * 0.6
    return err


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("wtype", ALL_TYPES, ids=wid)
def test_post_mode(kind, wtype, references, tiny):
    engine = _engine(wtype, "post", kind)
    engine.check_platform(torch.device("cpu"))
    model = engine.quantize(KINDS[kind][0], copy.deepcopy(references[kind][0]))
    _check(model, engine, kind, wtype, references, tiny)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("wtype", ALL_TYPES, ids=wid)
def test_pre_mode_matches_post_mode(kind, wtype, references, saved_models, tiny):
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel
    cls = FluxTransformer2DModel if kind == "flux" else UNet2DConditionModel
    name = KINDS[kind][0]
    engine = _engine(wtype, "pre", kind)
    model = engine.load_component(name, cls, str(saved_models), torch_dtype=torch.bfloat16)
    assert engine.report()["sdnq"]["components"][name]["how"] == "streamed"
    _check(model, engine, kind, wtype, references, tiny)
    post = _engine(wtype, "post", kind).quantize(name, copy.deepcopy(references[kind][0]))
    pre_state, post_state = model.state_dict(), post.state_dict()
    assert pre_state.keys() == post_state.keys()
    assert all(torch.equal(pre_state[k], post_state[k]) for k in pre_state)


@pytest.mark.parametrize("family", ["int", "uint"])
def test_error_ordered_by_bit_width(family, references, tiny):
    model, ref, _ = references["flux"]
    types = INT_TYPES if family == "int" else UINT_TYPES
    errs = [tiny.rel_err(tiny.run(_engine(t, "post", "flux").quantize("transformer", copy.deepcopy(model)), "flux"), ref)
            for t in types]
    assert errs == sorted(errs), dict(zip(types, errs))


def test_full_size_flux_weight_bytes_on_meta():
    """FLUX.1-dev (19 + 38 blocks, 3072 hidden) quantized on the meta device: stored GiB. Its blocks of a kind are
    identical, so the full size is counted exactly from full-width models of one or two blocks of each kind
    (base + 19 double + 38 single) instead of quantizing all 57 blocks."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    def sizes(double: int, single: int) -> dict[str, int]:
        with init_empty_weights():
            model = FluxTransformer2DModel(num_layers=double, num_single_layers=single,
                                           guidance_embeds=True).to(torch.bfloat16)
        out = {"bf16": module_nbytes(model)}
        for wtype in ("int8", "int6", "uint4"):
            out[wtype] = module_nbytes(_engine(wtype, "post", "flux").quantize("transformer", copy.deepcopy(model)))
        return out

    one, two_double, two_single = sizes(1, 1), sizes(2, 1), sizes(1, 2)
    gib = {k: (one[k] + 18 * (two_double[k] - one[k]) + 37 * (two_single[k] - one[k])) / 2 ** 30 for k in one}
    bf16 = gib["bf16"]
    assert 22.0 < bf16 < 22.4
    assert gib["int8"] <= 11.3 and gib["uint4"] <= 6.5
    assert abs(gib["int6"] - bf16 * 6 / 16) < 0.15  # 6/16 of BF16 plus scales


def test_quantize_model_puts_quantized_layers_on_the_place_while_the_budget_lasts():
    """`quantize_model(place=, budget=)` (what loading for offload uses on the GPU), with ``meta`` standing in
    for the device: layers land there in module order while the layers already there and the working memory
    of quantizing the next one fit the budget; the rest stay on the CPU, still quantized."""
    from engines.sdnq.apply import QUANTIZE_WORK, quantize_model
    from engines.sdnq.config import SDNQConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256, dtype=torch.bfloat16) for _ in range(6)])
    config = SDNQConfig(weight_type="int8", quantize_device="cpu")
    bf16 = module_nbytes(model[0])
    int8 = module_nbytes(quantize_model(copy.deepcopy(model[0]), config))
    budget = 2 * int8 + QUANTIZE_WORK * bf16  # two quantized layers placed, the third's quantization just fits
    quantize_model(model, config, place=torch.device("meta"), budget=budget)
    assert all(isinstance(layer, SDNQLayerMixin) for layer in model)
    where = [{t.device.type for t in [*layer.parameters(), *layer.buffers()]} for layer in model]
    assert where == [{"meta"}] * 3 + [{"cpu"}] * 3


@pytest.mark.parametrize("wtype", ["int8", "uint4", "int2", "uint2", "float8_e4m3fn", "int6"])
@pytest.mark.parametrize("quant_conv", [False, True])
def test_the_quantized_size_estimate_is_an_upper_bound_that_is_close(wtype, quant_conv):
    from engines.sdnq.apply import quantize_model, quantized_nbytes
    from engines.sdnq.config import SDNQConfig

    # K = 3000 is no multiple of any group size; a convolution's sub-4-bit types become uint4
    model = torch.nn.Sequential(torch.nn.Linear(3000, 1024, dtype=torch.bfloat16), torch.nn.LayerNorm(1024),
                                torch.nn.Linear(1024, 256, dtype=torch.bfloat16),
                                torch.nn.Conv2d(20, 40, 3, dtype=torch.bfloat16))
    config = SDNQConfig(weight_type=wtype, quantize_device="cpu", quant_conv=quant_conv)
    estimate = quantized_nbytes(model, config)
    real = module_nbytes(quantize_model(model, config))
    assert real <= estimate <= 1.4 * real  # scales and zero points counted for every type: an upper bound


def test_quantize_onto_needs_room_for_the_quantized_model_and_one_layers_quantization():
    from engines.registry import get_engine_class
    from engines.sdnq.apply import quantize_work_nbytes, quantized_nbytes

    eng = get_engine_class("sdnq")("int8", "post", {})
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256, dtype=torch.bfloat16) for _ in range(4)])
    need = quantized_nbytes(model, eng.config) + quantize_work_nbytes(model, eng.config)
    assert quantize_work_nbytes(model, eng.config) == 6 * module_nbytes(model[0])
    assert eng.quantize_onto("transformer", copy.deepcopy(model), torch.device("meta"), need - 1) is None
    placed = eng.quantize_onto("transformer", model, torch.device("meta"), need)
    assert {t.device.type for t in [*placed.parameters(), *placed.buffers()]} == {"meta"}
