"""Retention: how much of a LoRA's effect on the images survives quantization.

On the same prompts and seeds, the LoRA's effect on the quantized model is ``dq = (quantized + LoRA) -
quantized`` and on BF16 ``dr = (BF16 + LoRA) - BF16`` (images as saved, 8-bit, scaled to [0, 1]). Reported:
  * ``cosine``: cos(dq, dr) over every pixel of every image: 1 = the same change, 0 = unrelated;
  * ``psnr_db``: 10 log10(1 / mean((dq - dr)^2)): how close the two changes are, in the units of image PSNR;
  * ``magnitude``: |dq| / |dr|: below 1 the LoRA acts weaker on the quantized model, above 1 stronger.
"""
from __future__ import annotations

import math

import torch


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([im.float() / 255.0 for im in images])


def retention(quantized: list[torch.Tensor], quantized_lora: list[torch.Tensor], bf16: list[torch.Tensor],
              bf16_lora: list[torch.Tensor]) -> dict:
    """``{"cosine", "psnr_db", "magnitude", "bf16_delta_rms", "unavailable": {...}}`` for uint8 (C, H, W)
    images in workload order; a figure is None with its reason under ``unavailable`` when it is undefined."""
    dq = _stack(quantized_lora) - _stack(quantized)
    dr = _stack(bf16_lora) - _stack(bf16)
    out: dict = {"cosine": None, "psnr_db": None, "magnitude": None,
                 "bf16_delta_rms": float(dr.square().mean().sqrt()), "unavailable": {}}
    nr, nq = float(dr.norm()), float(dq.norm())
    if nr == 0:
        out["unavailable"]["all"] = "the LoRA does not change the BF16 images (8-bit): nothing to retain"
        return out
    out["magnitude"] = nq / nr
    if nq == 0:
        out["cosine"] = 0.0
    else:
        out["cosine"] = max(-1.0, min(1.0, float((dq.flatten() @ dr.flatten()) / (nq * nr))))
    mse = float((dq - dr).square().mean())
    if mse == 0:
        out["unavailable"]["psnr_db"] = "the two changes are identical (infinite PSNR)"
    else:
        out["psnr_db"] = 10 * math.log10(1.0 / mse)
    return out
