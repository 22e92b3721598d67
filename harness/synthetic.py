"""Synthetic checkpoints: the real FLUX / SDXL architectures with random, numerically tame weights.

A synthetic checkpoint is built once (deterministic seed), saved as an ordinary diffusers folder with
locally built tokenizers, and then loaded through the same ``from_pretrained`` path as a real one.
Its speed and memory are real; its image "quality" only measures numerical deviation from BF16.

Tame weights: every Linear / Conv weight is drawn N(0, gain^2 / fan_in) with zero biases, so each
layer roughly preserves activation scale (a trained network's activations do not explode, and
quantization error must not drown in chaos). Checked by a test: BF16 vs FP32 denoiser outputs agree.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

#: Bump when the construction below changes: it is part of the cache key.
SYNTHETIC_VERSION = 1
SEED = 20241121


@dataclass(frozen=True)
class Architecture:
    family: str  # "flux" | "sdxl"
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokenizer_max_length: int = 77
    t5_max_length: int = 512

    def fingerprint(self) -> str:
        blob = json.dumps({"v": SYNTHETIC_VERSION, "seed": SEED, "family": self.family,
                           "components": self.components}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- published architecture configs (FLUX.1-dev / -schnell, SDXL base 1.0) ------------------------

_CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
               projection_dim=768)
_CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
               num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
               projection_dim=1280)
_T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
               relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
               is_encoder_decoder=False, use_cache=False)
_FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                 layers_per_block=2, norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False, sample_size=1024)
_FLUX_DIT = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                 guidance_embeds=True, axes_dims_rope=[16, 56, 56])
_FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                       max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
_SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=[320, 640, 1280],
                  down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                  up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                  transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
                  cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2816, use_linear_projection=True, norm_num_groups=32)
_SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                 layers_per_block=2, norm_num_groups=32, scaling_factor=0.13025, sample_size=1024,
                 force_upcast=False)
_SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                       beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
                       prediction_type="epsilon")

# --- tiny variants: same classes, sizes that run in seconds on a CPU -----------------------------

_CLIP_TINY = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32)
_T5_TINY = dict(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                is_encoder_decoder=False, use_cache=False)
_VAE_TINY = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, norm_num_groups=8, sample_size=64)

ARCHITECTURES: dict[str, Architecture] = {
    "flux-dev": Architecture("flux", {
        "transformer": _FLUX_DIT, "vae": _FLUX_VAE, "text_encoder": _CLIP_L, "text_encoder_2": _T5_XXL,
        "scheduler": _FLUX_SCHEDULER}),
    "flux-schnell": Architecture("flux", {
        "transformer": {**_FLUX_DIT, "guidance_embeds": False}, "vae": _FLUX_VAE, "text_encoder": _CLIP_L,
        "text_encoder_2": _T5_XXL, "scheduler": {**_FLUX_SCHEDULER, "use_dynamic_shifting": False, "shift": 1.0}},
        t5_max_length=256),
    "flux-tiny": Architecture("flux", {
        "transformer": dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
                            num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32,
                            guidance_embeds=True, axes_dims_rope=[4, 6, 6]),
        "vae": {**_FLUX_VAE, **_VAE_TINY}, "text_encoder": _CLIP_TINY, "text_encoder_2": _T5_TINY,
        "scheduler": _FLUX_SCHEDULER}, t5_max_length=32),
    "sdxl": Architecture("sdxl", {
        "unet": _SDXL_UNET, "vae": _SDXL_VAE, "text_encoder": _CLIP_L,
        "text_encoder_2": {**_CLIP_G}, "scheduler": _SDXL_SCHEDULER}),
    "sdxl-tiny": Architecture("sdxl", {
        "unet": dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[32, 64],
                     down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                     up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 1],
                     attention_head_dim=[2, 4], cross_attention_dim=64, addition_embed_type="text_time",
                     addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                     use_linear_projection=True, norm_num_groups=8),
        "vae": {**_SDXL_VAE, **_VAE_TINY}, "text_encoder": _CLIP_TINY,
        "text_encoder_2": {**_CLIP_TINY, "projection_dim": 32}, "scheduler": _SDXL_SCHEDULER}),
}


# --- tokenizers, built locally -------------------------------------------------------------------

def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for raw bytes (GPT-2/CLIP convention)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, shift = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + shift))
            shift += 1
    return out


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP tokenizer (byte symbols, no merges): ids stay below 520."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = _byte_symbols()
    for suffix in ("", "</w>"):
        for s in symbols:
            vocab[s + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 512):
    """A character-level T5 (unigram) tokenizer: ids stay below 120."""
    from transformers import T5TokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()/&+"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -2.0) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


# --- weights ------------------------------------------------------------------------------------

#: Linear layers that read a sinusoidal timestep/guidance embedding ([sin | cos] or [cos | sin] halves).
_SINUSOID_READERS = ("timestep_embedder.linear_1", "guidance_embedder.linear_1", "time_embedding.linear_1")
#: Highest sinusoid frequency (radians per unit of t*1000) a synthetic model listens to. In BF16, t*1000
#: and guidance*1000 are rounded by up to 16 units, which scrambles the phase of faster sinusoids; a
#: trained model is smooth in t, so the synthetic one damps them instead of amplifying that noise.
_MAX_TIME_FREQUENCY = 0.003


@torch.no_grad()
def tame_init_(module: torch.nn.Module, gain: float = 1.0, generator: torch.Generator | None = None) -> None:
    """Re-draw every Linear / Conv / Embedding weight so activations keep their scale."""
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d)):
            fan_in = m.weight[0].numel()
            _normal_(m.weight, gain / math.sqrt(fan_in), generator)
            if m.bias is not None:
                m.bias.zero_()
            if name.endswith(_SINUSOID_READERS):
                m.weight.mul_(_sinusoid_damping(m.weight.shape[1]).to(m.weight))
        elif isinstance(m, torch.nn.Embedding):
            _normal_(m.weight, 1.0, generator)


def _sinusoid_damping(width: int) -> torch.Tensor:
    """Per-input-column weights 1 / (1 + (f / f_max)^2) for diffusers' Timesteps frequencies."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    damp = 1.0 / (1.0 + (freqs / _MAX_TIME_FREQUENCY) ** 2)
    # Renormalise so the surviving columns keep the layer's output scale.
    damp = damp / damp.square().mean().sqrt()
    return torch.cat([damp, damp])


def _normal_(t: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    # Draw in float32 on the tensor's device, then cast: same numbers for bf16 and fp32 builds.
    t.copy_(torch.randn(t.shape, generator=generator, device=t.device, dtype=torch.float32) * std)


def build_components(arch: Architecture, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Instantiate every pipeline component of ``arch`` with tame random weights."""
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                           FluxTransformer2DModel, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    c = arch.components
    gen = torch.Generator(device=device).manual_seed(SEED)
    clip_ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    builders: dict[str, Callable[[], torch.nn.Module]] = {"vae": lambda: AutoencoderKL(**c["vae"])}
    if arch.family == "flux":
        builders["transformer"] = lambda: FluxTransformer2DModel(**c["transformer"])
        builders["text_encoder"] = lambda: CLIPTextModel(CLIPTextConfig(**c["text_encoder"], **clip_ids))
        builders["text_encoder_2"] = lambda: T5EncoderModel(T5Config(**c["text_encoder_2"]))
        out: dict[str, Any] = {"scheduler": FlowMatchEulerDiscreteScheduler(**c["scheduler"]),
                               "tokenizer": clip_tokenizer(arch.tokenizer_max_length),
                               "tokenizer_2": t5_tokenizer(arch.t5_max_length)}
    elif arch.family == "sdxl":
        builders["unet"] = lambda: UNet2DConditionModel(**c["unet"])
        builders["text_encoder"] = lambda: CLIPTextModel(CLIPTextConfig(**c["text_encoder"], **clip_ids))
        builders["text_encoder_2"] = lambda: CLIPTextModelWithProjection(
            CLIPTextConfig(**c["text_encoder_2"], **clip_ids))
        out = {"scheduler": EulerDiscreteScheduler(**c["scheduler"]),
               "tokenizer": clip_tokenizer(arch.tokenizer_max_length),
               "tokenizer_2": clip_tokenizer(arch.tokenizer_max_length)}
    else:
        raise ValueError(f"unknown family {arch.family!r}")
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        for name in sorted(builders):
            with torch.device(device):
                module = builders[name]()
            tame_init_(module, generator=gen)
            out[name] = module.to(dtype).eval()
    finally:
        torch.set_default_dtype(previous)
    return out


def pipeline_class(family: str):
    from diffusers import FluxPipeline, StableDiffusionXLPipeline

    return {"flux": FluxPipeline, "sdxl": StableDiffusionXLPipeline}[family]


def checkpoint_dir(name: str, cache_dir: str | os.PathLike) -> Path:
    arch = ARCHITECTURES[name]
    return Path(cache_dir) / "synthetic" / f"{name}-{arch.fingerprint()}"


def ensure_checkpoint(name: str, cache_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Path:
    """Return the folder of synthetic checkpoint ``name``, building and saving it once if absent.

    Built into a temporary folder beside the target and renamed into place, so a crash mid-save never
    leaves a half-written checkpoint that later runs would load."""
    if name not in ARCHITECTURES:
        raise KeyError(name)
    target = checkpoint_dir(name, cache_dir)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    arch = ARCHITECTURES[name]
    components = build_components(arch, device=device)
    pipe = pipeline_class(arch.family)(**components)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "synthetic.json").write_text(json.dumps(
            {"synthetic": True, "architecture": name, "fingerprint": arch.fingerprint(), "seed": SEED,
             "rng_device": torch.device(device).type,  # the same seed draws other numbers on CPU and CUDA
             "note": "random weights: image quality columns measure numerical deviation only"}, indent=1))
        del pipe, components
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
