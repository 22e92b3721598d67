import torch

from harness.lora import synthetic
from harness.lora.check import _shapes, denoiser_shapes


def _flux():
    from diffusers import FluxTransformer2DModel

    from harness.synthetic import ARCHITECTURES

    torch.manual_seed(0)
    return FluxTransformer2DModel(**ARCHITECTURES["flux-tiny"].components["transformer"])


def test_a_synthetic_lora_is_reproducible_and_adapts_attention_and_feed_forward():
    model = _flux()
    a = synthetic.state_dict(model, "transformer", rank=4, strength=0.1, seed=1)
    b = synthetic.state_dict(model, "transformer", rank=4, strength=0.1, seed=1)
    c = synthetic.state_dict(model, "transformer", rank=4, strength=0.1, seed=2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    layers = {k[len("transformer."):].rsplit(".lora_", 1)[0] for k in a}
    assert "transformer_blocks.0.attn.to_q" in layers and "transformer_blocks.0.ff.net.2" in layers
    assert "single_transformer_blocks.0.proj_mlp" in layers
    assert not any(name.startswith(("x_embedder", "proj_out", "norm_out", "time_text_embed")) for name in layers)
    assert a["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"].shape[0] == 4


def test_convs_are_adapted_only_when_asked():
    from diffusers import UNet2DConditionModel

    from harness.synthetic import ARCHITECTURES

    unet = UNet2DConditionModel(**ARCHITECTURES["sdxl-tiny"].components["unet"])
    plain = synthetic.state_dict(unet, "unet", 4, 0.1, 0)
    with_convs = synthetic.state_dict(unet, "unet", 4, 0.1, 0, convs=True)
    assert not any(v.dim() == 4 for v in plain.values())
    assert any(k.endswith("resnets.0.conv1.lora_A.weight") and v.dim() == 4 for k, v in with_convs.items())


def test_the_denoisers_layers_are_read_from_a_meta_instance():
    shapes = denoiser_shapes("flux", "flux-tiny", None)
    assert shapes["transformer_blocks.0.attn.to_q"] == ("linear", 64, 64)
    assert _shapes.cache_info().currsize >= 1
