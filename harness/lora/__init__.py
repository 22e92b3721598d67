"""LoRA as a sweep axis (``lora=none|file|synthetic``).

One module per job: `options` (the schemas of the ``lora`` group), `synthetic` (a random LoRA drawn from a
seed), `files` (reading a user's .safetensors LoRA and matching its keys to the denoiser's layers),
`check` (the validation of a cell's LoRA, in the parent, before anything runs), `apply` (in the cell:
load the LoRA the way the engine's users would, verify where it went, unload), `fingerprint` (bit-exact
state of a module, to prove unloading restores it) and `retention` (how much of the LoRA's effect on the
images survives quantization). A LoRA always goes to the denoiser (transformer / unet).
"""
from __future__ import annotations

#: Where a LoRA goes, per model family, and the key prefix diffusers uses for it.
DENOISER = {"flux": "transformer", "sdxl": "unet"}


def is_on(lora: dict | None) -> bool:
    """Whether the cell's ``lora`` block names a LoRA (anything but ``none``)."""
    return bool(lora) and lora.get("name", "none") != "none"


def label(lora: dict | None) -> str:
    """``none``, ``synthetic r16`` (+ `` convs``, `` fused``), ``file a.safetensors`` (one or two files by
    name, more as ``file x3``): the LoRA of a cell in a few characters."""
    if not is_on(lora):
        return "none"
    options = lora.get("options") or {}
    if lora["name"] == "synthetic":
        text = f"synthetic r{options.get('rank')}" + (" convs" if options.get("convs") else "")
    else:
        names = [str(p).replace("\\", "/").rsplit("/", 1)[-1] for p in options.get("paths") or []]
        text = f"file {'+'.join(names)}" if 0 < len(names) <= 2 else f"file x{len(names)}"
    return text + (" fused" if options.get("fuse") else "")
