"""Tiny FLUX / SDXL-style denoisers built in-process (no downloads) and their inputs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


FLUX_TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                 axes_dims_rope=(4, 6, 6), guidance_embeds=False)
UNET_TINY = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                 attention_head_dim=8, norm_num_groups=16, transformer_layers_per_block=1)


def _tame_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw weights as N(0, 0.5/sqrt(fan_in)) so activations stay bounded (like a trained model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / fan_in ** 0.5))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def make_flux() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    return _tame_(FluxTransformer2DModel(**FLUX_TINY), 0).to(torch.bfloat16).eval()


def make_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return _tame_(UNet2DConditionModel(**UNET_TINY), 1).to(torch.bfloat16).eval()


def flux_inputs(batch: int = 1, h: int = 8, w: int = 8, txt: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(h * w, 3)
    ids[:, 1] = torch.arange(h).repeat_interleave(w)
    ids[:, 2] = torch.arange(w).repeat(h)
    return dict(hidden_states=torch.randn(batch, h * w, 16, generator=g).bfloat16(),
                encoder_hidden_states=torch.randn(batch, txt, 32, generator=g).bfloat16(),
                pooled_projections=torch.randn(batch, 32, generator=g).bfloat16(),
                timestep=torch.full((batch,), 0.5).bfloat16(), img_ids=ids, txt_ids=torch.zeros(txt, 3),
                return_dict=False)


def unet_inputs(batch: int = 1) -> dict:
    g = torch.Generator().manual_seed(2)
    return dict(sample=torch.randn(batch, 4, 16, 16, generator=g).bfloat16(), timestep=torch.tensor([10]),
                encoder_hidden_states=torch.randn(batch, 8, 32, generator=g).bfloat16(), return_dict=False)


@torch.no_grad()
def run(model: torch.nn.Module, kind: str) -> torch.Tensor:
    return model(**(flux_inputs() if kind == "flux" else unet_inputs()))[0].float()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


@pytest.fixture(scope="session")
def tiny():
    """Helpers for the tiny models: make_flux/make_unet, flux_inputs/unet_inputs, run, rel_err."""
    return SimpleNamespace(make_flux=make_flux, make_unet=make_unet, flux_inputs=flux_inputs,
                           unet_inputs=unet_inputs, run=run, rel_err=rel_err,
                           make={"flux": make_flux, "unet": make_unet})


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory):
    """The tiny models saved as diffusers folders (``<root>/transformer``, ``<root>/unet``)."""
    root = tmp_path_factory.mktemp("tiny_models")
    make_flux().save_pretrained(root / "transformer")
    make_unet().save_pretrained(root / "unet")
    return root

