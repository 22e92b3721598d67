"""Tiny FLUX / SDXL-style models and helpers shared by the engine tests.

Models are built from a fixed seed in BF16, small enough for a 2-core CPU, with layer widths
that exercise the backends' group sizes (64-wide linears, 256-wide MLPs).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    config = CLIPTextConfig(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=16,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1)
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


class Tiny:
    """What an engine test needs: fresh tiny models and the BF16 reference to compare with."""

    make = staticmethod(lambda name: MAKERS[name]())
    output = staticmethod(output)
    rel_error = staticmethod(rel_error)
    nbytes = staticmethod(module_nbytes)

    def __init__(self):
        self._refs = {}

    def reference(self, name):
        """(example inputs, BF16 output, BF16 stored bytes) of tiny component ``name``."""
        if name not in self._refs:
            model = self.make(name)
            inputs = example_inputs(model)
            self._refs[name] = (inputs, output(model, inputs), module_nbytes(model))
        return self._refs[name]

    def compare(self, name, model):
        """(BF16 bytes / quantized bytes, relative L2 error of the output vs BF16)."""
        inputs, ref, ref_bytes = self.reference(name)
        return ref_bytes / module_nbytes(model), rel_error(output(model, inputs), ref)

    def check_post_mode(self, engine, name, min_ratio, max_error):
        """Quantize a fresh tiny ``name`` with ``engine`` (post mode) and assert every target module was
        converted, bytes shrank by at least ``min_ratio`` and the output error is at most ``max_error``."""
        model = engine.quantize(name, self.make(name))
        counts = engine.verify(name, model)
        assert counts["quantized_modules"] == counts["target_modules"] > 0, counts
        ratio, error = self.compare(name, model)
        assert ratio >= min_ratio, ratio
        assert error <= max_error, error
        return model


@pytest.fixture(scope="session")
def tiny():
    return Tiny()


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory):
    """A diffusers-style model folder (transformer/, unet/, text_encoder/) saved with save_pretrained."""
    root = tmp_path_factory.mktemp("tiny-pipeline")
    for name, make in MAKERS.items():
        make().save_pretrained(root / name)
    return root


@pytest.fixture(scope="session")
def imported_modules():
    """modules(engine_module) -> the set of top-level packages a fresh interpreter has loaded after
    importing ``engine_module`` (to prove backends are imported lazily)."""
    def modules(engine_module: str) -> set[str]:
        code = (f"import sys, importlib; importlib.import_module({engine_module!r}); "
                "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
        root = Path(__file__).resolve().parents[2]
        # An import takes 2-5 s on an idle 2-core machine; the limit leaves room for a busy one.
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                              check=True, timeout=300)
        return set(done.stdout.split())
    return modules
