import pytest
import torch

from engines.base import EngineError, Unsupported, module_nbytes
from engines.bf16 import BF16Engine
from engines.torchao import TorchAOEngine

CPU = torch.device("cpu")


def _tiny_flux():
    from diffusers import FluxTransformer2DModel

    from harness.synthetic import ARCHITECTURES, tame_init_

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**ARCHITECTURES["flux-tiny"].components["transformer"])
    tame_init_(model, generator=torch.Generator().manual_seed(0))
    return model.to(torch.bfloat16).eval()


def _forward(model):
    g = torch.Generator().manual_seed(3)
    kw = dict(hidden_states=torch.randn(1, 16, 64, generator=g), encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
              pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.5]),
              guidance=torch.tensor([3.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3))
    kw = {k: v.to(torch.bfloat16) if k in ("hidden_states", "encoder_hidden_states", "pooled_projections") else v
          for k, v in kw.items()}
    with torch.no_grad():
        return model(**kw).sample.float()


@pytest.mark.parametrize("dtype, ratio, max_err", [("int8", 0.55, 0.03), ("int8dq", 0.55, 0.06),
                                                    ("float8", 0.55, 0.08)], ids=["w-int8", "w-int8dq", "w-float8"])
def test_cpu_dtypes_shrink_weights_and_stay_close(dtype, ratio, max_err):
    model = _tiny_flux()
    ref, before = _forward(model), module_nbytes(model)
    engine = TorchAOEngine(dtype)
    engine.check_platform(CPU)
    engine.quantize("transformer", model)
    counts = engine.verify("transformer", model)
    assert counts["quantized_modules"] == counts["target_modules"] > 0
    assert module_nbytes(model) / before < ratio
    out = _forward(model)
    assert ((out - ref).norm() / ref.norm()).item() < max_err


@pytest.mark.parametrize("dtype", ["int4", "float8dq"])
def test_gpu_only_dtypes_are_unsupported_on_cpu(dtype):
    with pytest.raises(Unsupported, match="CUDA"):
        TorchAOEngine(dtype).check_platform(CPU)


def test_nothing_quantized_is_an_error_not_a_result():
    engine = TorchAOEngine("int8")
    with pytest.raises(EngineError, match="quantized no module"):
        engine.verify("transformer", torch.nn.Sequential(torch.nn.ReLU()))


def test_bad_dtype_and_option_name_the_choices():
    with pytest.raises(ValueError, match="supports: int8, int8dq, int4, float8, float8dq"):
        TorchAOEngine("nf4")
    with pytest.raises(ValueError, match="has no option 'bits'. Options: group_size, granularity"):
        TorchAOEngine("int8", options={"bits": 3})
    with pytest.raises(ValueError, match=r"granularity='axis' is not valid: expected row \| tensor"):
        TorchAOEngine("int8", options={"granularity": "axis"})


def test_bf16_reference_changes_nothing():
    model = _tiny_flux()
    engine = BF16Engine()
    assert engine.quantize("transformer", model) is model
    assert engine.verify("transformer", model) == {"quantized_modules": 0, "target_modules": 0}


def test_pre_mode_quantizes_while_loading(tmp_path):
    model = _tiny_flux()
    model.save_pretrained(tmp_path / "transformer")
    engine = TorchAOEngine("int8", mode="pre")
    loaded = engine.load_component("transformer", type(model), str(tmp_path), torch_dtype=torch.bfloat16)
    done, targets = engine.count_quantized(loaded)
    assert done == targets > 0
    assert module_nbytes(loaded) < 0.6 * module_nbytes(model)
