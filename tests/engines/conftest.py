"""Tiny FLUX / SDXL-style models and helpers shared by the engine tests.

Models are built from a fixed seed in BF16, small enough for a 2-core CPU, with layer widths
that exercise the backends' group sizes (64-wide linears, 256-wide MLPs).
"""
from __future__ import annotations

import pytest
import torch

from engines.base import module_nbytes
from engines.nncf import example_inputs

FLUX_CONFIG = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                   attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                   pooled_projection_dim=64, axes_dims_rope=(8, 12, 12))
UNET_CONFIG = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(32, 64), norm_num_groups=8,
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                   cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
                   addition_embed_type="text_time", addition_time_embed_dim=8,
                   projection_class_embeddings_input_dim=6 * 8 + 64)


def make_flux() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    return FluxTransformer2DModel(**FLUX_CONFIG).to(torch.bfloat16).eval()


def make_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG).to(torch.bfloat16).eval()


def make_clip() -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=256,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16)
    return CLIPTextModel(config).to(torch.bfloat16).eval()


MAKERS = {"transformer": make_flux, "unet": make_unet, "text_encoder": make_clip}


def output(module: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """First output tensor of a forward, in FP32."""
    with torch.no_grad():
        out = module(**inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    return out.float()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="session")
def reference():
    """name -> (inputs, BF16 output, BF16 bytes) for each tiny component."""
    cache = {}

    def get(name):
        if name not in cache:
            model = MAKERS[name]()
            inputs = example_inputs(model)
            cache[name] = (inputs, output(model, inputs), module_nbytes(model))
        return cache[name]
    return get


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory):
    """A diffusers-style folder with the tiny components, saved with save_pretrained."""
    root = tmp_path_factory.mktemp("tiny-pipeline")
    for name, make in MAKERS.items():
        make().save_pretrained(root / name)
    return root
