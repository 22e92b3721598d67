"""LoRA files as data: diffusers/peft and kohya keys matched to the denoiser's layers, to the same result."""
import pytest
import torch
from safetensors.torch import save_file

from harness.lora import files
from harness.lora.check import denoiser_shapes

RANK = 4


def _flux_model():
    from diffusers import FluxTransformer2DModel

    from harness.synthetic import ARCHITECTURES

    torch.manual_seed(0)
    return FluxTransformer2DModel(**ARCHITECTURES["flux-tiny"].components["transformer"]).eval()


def write_flux_pair(folder):
    """The same LoRA twice: kohya keys in Black Forest Labs' names (fused qkv, alpha = rank / 2) and the
    diffusers keys it means (q, k, v split, alpha baked into B)."""
    g = torch.Generator().manual_seed(0)
    down = {n: torch.randn(RANK, 64, generator=g) for n in ("qkv", "proj", "mlp_0", "mlp_2")}
    down["mlp_2"] = torch.randn(RANK, 256, generator=g)
    up = {"qkv": torch.randn(192, RANK, generator=g), "proj": torch.randn(64, RANK, generator=g),
          "mlp_0": torch.randn(256, RANK, generator=g), "mlp_2": torch.randn(64, RANK, generator=g)}
    kohya = {}
    bfl = {"qkv": "img_attn_qkv", "proj": "img_attn_proj", "mlp_0": "img_mlp_0", "mlp_2": "img_mlp_2"}
    for short, name in bfl.items():
        stem = f"lora_unet_double_blocks_0_{name}"
        kohya[f"{stem}.lora_down.weight"] = down[short]
        kohya[f"{stem}.lora_up.weight"] = up[short]
        kohya[f"{stem}.alpha"] = torch.tensor(RANK / 2)
    diffusers = {}
    layers = {"attn.to_out.0": "proj", "ff.net.0.proj": "mlp_0", "ff.net.2": "mlp_2"}
    for i, part in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
        diffusers[f"transformer.transformer_blocks.0.{part}.lora_A.weight"] = down["qkv"].clone()
        diffusers[f"transformer.transformer_blocks.0.{part}.lora_B.weight"] = up["qkv"][64 * i:64 * (i + 1)] * 0.5
    for layer, short in layers.items():
        diffusers[f"transformer.transformer_blocks.0.{layer}.lora_A.weight"] = down[short]
        diffusers[f"transformer.transformer_blocks.0.{layer}.lora_B.weight"] = up[short] * 0.5
    save_file(kohya, str(folder / "kohya.safetensors"))
    save_file(diffusers, str(folder / "diffusers.safetensors"))
    return folder / "kohya.safetensors", folder / "diffusers.safetensors"


def _products(peft):
    return {k.rsplit(".lora_", 1)[0]: peft[k.replace("lora_A", "lora_B")].float() @ v.float()
            for k, v in peft.items() if ".lora_A." in k}


def test_kohya_and_diffusers_files_load_to_the_same_result(tmp_path):
    kohya, diffusers = write_flux_pair(tmp_path)
    shapes = denoiser_shapes("flux", "flux-tiny", None)
    a = files.to_peft(files.read(kohya), "flux", shapes, str(kohya), "transformer")
    b = files.to_peft(files.read(diffusers), "flux", shapes, str(diffusers), "transformer")
    pa, pb = _products(a), _products(b)
    assert pa.keys() == pb.keys() and len(pa) == 6
    assert all(torch.allclose(pa[k], pb[k], rtol=1e-5, atol=1e-5) for k in pa)

    from engines.nncf import example_inputs

    outputs = []
    for state in (a, b):
        model = _flux_model()
        inputs = example_inputs(model)
        base = model(**inputs)[0]
        model.load_lora_adapter(dict(state), adapter_name="x", prefix="transformer")
        outputs.append((model(**inputs)[0] - base).detach())
    assert outputs[0].abs().max() > 1e-3
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_kohya_keys_in_diffusers_layer_names_are_matched_and_alpha_is_baked_in():
    shapes = denoiser_shapes("sdxl", "sdxl-tiny", None)
    stem = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    raw = {f"{stem}.lora_down.weight": torch.ones(RANK, 64), f"{stem}.lora_up.weight": torch.ones(64, RANK),
           f"{stem}.alpha": torch.tensor(1.0)}
    out = files.to_peft(raw, "sdxl", shapes, "x", "unet")
    layer = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert set(out) == {f"{layer}.lora_A.weight", f"{layer}.lora_B.weight"}
    assert torch.allclose(out[f"{layer}.lora_B.weight"], torch.full((64, RANK), 1.0 / RANK))


@pytest.mark.parametrize("raw, message", [
    ({"transformer.transformer_blocks.9.attn.to_q.lora_A.weight": torch.ones(4, 64),
      "transformer.transformer_blocks.9.attn.to_q.lora_B.weight": torch.ones(64, 4)}, "is not a Linear or Conv2d"),
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 63),
      "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, r"expected A \(4, 64\)"),
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 64)}, "has no lora_B"),
    ({"model.diffusion.weird": torch.ones(2)}, "neither diffusers/peft"),
    ({"text_encoder.text_model.x.lora_A.weight": torch.ones(4, 4)}, "text-encoder keys"),
    ({"lora_unet_nowhere_to_q.lora_down.weight": torch.ones(4, 64),
      "lora_unet_nowhere_to_q.lora_up.weight": torch.ones(64, 4)}, "diffusers cannot convert"),
    ({"unet.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 64),
      "unet.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, "is for a unet"),
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 64),
      "transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 64),
      "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, "two lora_A weights"),
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.tensor(1.0),
      "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(64, 4)}, "scalar LoRA weight"),
], ids=["unknown-layer", "wrong-shape", "half-pair", "unknown-format", "text-encoder", "kohya-unknown",
        "other-denoiser-prefix", "layer-twice", "scalar"])
def test_a_file_whose_keys_or_shapes_fit_no_layer_is_refused(raw, message):
    shapes = denoiser_shapes("flux", "flux-tiny", None)
    with pytest.raises(files.LoraFileError, match=message):
        files.to_peft(raw, "flux", shapes, "f.safetensors", "transformer")


def test_the_suffix_is_matched_without_case(tmp_path):
    path = tmp_path / "GOOD.SAFETENSORS"
    save_file({"x": torch.ones(1)}, str(path))
    assert files.check_path(str(path)) == path
