"""Each engine with a LoRA, on the tiny denoisers in-process: what it keeps of the LoRA's effect, what unloading
restores, and that every refusal an engine declares (`Engine.check_lora`) is what diffusers + peft really do."""
import copy

import pytest
import torch

from engines.base import Unsupported
from engines.registry import get_engine_class
from harness.lora.apply import adapted_layers
from harness.lora.fingerprint import fingerprint
from harness.lora.synthetic import state_dict as synthetic_lora

pytest.importorskip("peft")


def _lora(model):
    return synthetic_lora(model, "transformer", rank=8, strength=0.2, seed=0)


def _effect(model, state, tiny):
    """(the LoRA's effect on the output, the output without it, the model with the LoRA loaded)."""
    inputs = tiny.reference("transformer")[0]
    base = tiny.output(model, inputs)
    model.load_lora_adapter(dict(state), adapter_name="x", prefix="transformer")
    return tiny.output(model, inputs) - base, base, model


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.fixture(scope="module")
def bf16_effect(tiny):
    model = tiny.make("transformer")
    return _effect(model, _lora(model), tiny)[0]


PAIRS = {"sdnq": ("int8", "int4"), "quanto": ("int8", "int4"), "gguf": ("q8_0", "q4_0"), "bnb": ("int8", "nf4")}


@pytest.mark.parametrize("engine", list(PAIRS))
def test_eight_bit_keeps_more_of_the_lora_than_four_bit(engine, tiny, bf16_effect):
    kept = {}
    for dtype in PAIRS[engine]:
        eng = get_engine_class(engine)(dtype)
        eng.check_platform(torch.device("cpu"))
        eng.check_lora(False, torch.device("cpu"))
        model = eng.quantize("transformer", tiny.make("transformer"))
        effect, _, model = _effect(model, _lora(tiny.make("transformer")), tiny)
        assert all(eng.count_quantized(layer)[0] for layer in adapted_layers(model).values())
        kept[dtype] = _cos(effect, bf16_effect)
    eight, four = PAIRS[engine]
    assert kept[eight] > 0.97 and kept[eight] > kept[four], kept


def test_sdnq_unload_and_unfuse_restore_the_quantized_model_bit_for_bit(tiny):
    from engines.sdnq.lora import fuse, unfuse

    eng = get_engine_class("sdnq")("int8")
    model = eng.quantize("transformer", tiny.make("transformer"))
    inputs = tiny.reference("transformer")[0]
    before, state = fingerprint(model), {k: v.clone() for k, v in model.state_dict().items()}
    effect, base, model = _effect(model, _lora(model), tiny)
    assert effect.abs().max() > 0
    model.unload_lora()
    after = model.state_dict()
    assert fingerprint(model) == before and after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert torch.equal(tiny.output(model, inputs), base)

    model.load_lora_adapter(dict(_lora(model)), adapter_name="x", prefix="transformer")
    with_adapter = tiny.output(model, inputs)
    assert fuse(model, ["x"]) == len(_lora(model)) // 2
    fused = tiny.output(model, inputs)
    assert not adapted_layers(model) and _cos(fused - base, with_adapter - base) > 0.98  # re-quantized, kept
    assert fingerprint(model) != before
    unfuse(model)
    model.unload_lora()
    assert fingerprint(model) == before and torch.equal(tiny.output(model, inputs), base)


def test_quanto_refuses_to_fuse_because_peft_would_drop_the_lora(tiny):
    eng = get_engine_class("quanto")("int8")
    with pytest.raises(Unsupported, match="silently"):
        eng.check_lora(True, torch.device("cpu"))
    model = eng.quantize("transformer", tiny.make("transformer"))
    effect, base, model = _effect(model, _lora(model), tiny)
    assert effect.abs().max() > 0
    model.fuse_lora(lora_scale=1.0)
    model.unload_lora()
    assert torch.equal(tiny.output(model, tiny.reference("transformer")[0]), base)  # the LoRA is gone


@pytest.mark.parametrize("engine, error", [("nncf", RuntimeError), ("layerwise", NotImplementedError)])
def test_engines_that_refuse_a_lora_do_fail_with_one(engine, error, tiny):
    eng = get_engine_class(engine)()
    with pytest.raises(Unsupported, match="peft"):
        eng.check_lora(False, torch.device("cpu"))
    eng.check_platform(torch.device("cpu"))
    model = eng.quantize("transformer", tiny.make("transformer"))
    with pytest.raises(error):
        _effect(model, _lora(model), tiny)


def test_gguf_refuses_to_fuse_because_peft_cannot_merge_packed_blocks(tiny):
    eng = get_engine_class("gguf")("q8_0", "post")
    with pytest.raises(Unsupported, match="packed"):
        eng.check_lora(True, torch.device("cpu"))
    model = eng.quantize("transformer", tiny.make("transformer"))
    _, _, model = _effect(model, _lora(model), tiny)
    with pytest.raises(RuntimeError, match="size"):
        model.fuse_lora(lora_scale=1.0)


def test_torchao_fuses_by_requantizing_with_the_engines_config(tiny):
    from harness.lora import apply

    eng = get_engine_class("torchao")("int8")
    eng.check_lora(True, torch.device("cpu"))
    with pytest.raises(Unsupported, match="int8"):
        get_engine_class("torchao")("int4").check_lora(False, torch.device("cpu"))

    class Pipe:
        transformer = eng.quantize("transformer", tiny.make("transformer"))

    pipe = Pipe()
    base = tiny.output(pipe.transformer, tiny.reference("transformer")[0])
    report = apply.load(pipe, eng, {"name": "synthetic", "options": {"rank": 8, "strength": 0.2, "seed": 0,
                                                                    "convs": False, "scale": 1.0, "fuse": True}},
                        "flux")
    assert report["how"] == "fused-requantized" and not adapted_layers(pipe.transformer)
    fused = tiny.output(pipe.transformer, tiny.reference("transformer")[0])
    assert eng.count_quantized(pipe.transformer)[0] > 0 and (fused - base).abs().max() > 0
