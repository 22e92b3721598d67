"""A user's LoRA file: read as data (safetensors only: no pickle, nothing imported), its keys matched to the
denoiser's layers, its shapes checked against them, and the result keyed diffusers/peft's way
(``<prefix>.<layer>.lora_A.weight`` / ``lora_B.weight``), the form ``load_lora_weights`` takes.

Key formats:
  * diffusers / peft: ``[transformer.|unet.]<layer>.lora_A.weight`` and ``.lora_B.weight``;
  * kohya: ``lora_unet_<layer>`` / ``lora_transformer_<layer>`` with the layer's dots written as ``_``,
    ``.lora_down.weight``, ``.lora_up.weight`` and an optional ``.alpha`` (baked in as ``alpha / rank``);
    for FLUX, kohya files in Black Forest Labs' layer names (``lora_unet_double_blocks_0_img_attn_qkv``)
    are converted by diffusers' own converter (``FluxPipeline.lora_state_dict`` on the tensors read here).
Text-encoder keys (``text_encoder.``, ``lora_te*``) are refused: the harness applies LoRAs to the denoiser.
Every problem is a `LoraFileError` with one line.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import torch
from torch import nn

SUFFIX = ".safetensors"
_PEFT = re.compile(r"^(?:(transformer|unet)\.)?(.+)\.(lora_A|lora_B)\.weight$")
_KOHYA = re.compile(r"^lora_(unet|transformer)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_TEXT = re.compile(r"^(text_encoder|text_encoder_2|lora_te\d?_)")


class LoraFileError(ValueError):
    """A LoRA file that cannot be used: missing, not safetensors, keys or shapes that fit no layer."""


def sha256(path: str | Path) -> str:
    """The file's content hash (part of the cell key: another file under the same name is another cell)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_path(path) -> Path:
    """``path`` as an absolute path to an existing .safetensors file whose header parses."""
    if not isinstance(path, str) or not path:
        raise LoraFileError(f"lora.options.paths: {path!r} is not a file path")
    p = Path(path).expanduser()
    if p.suffix.lower() != SUFFIX:
        raise LoraFileError(f"LoRA file {path}: only {SUFFIX} files are read (data, never pickled code)")
    if not p.is_file():
        raise LoraFileError(f"LoRA file {path} does not exist (or is not a file)")
    try:
        with open(p, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise LoraFileError(f"LoRA file {path} is not a valid safetensors file ({exc})") from None
    return p.resolve()


def read(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a corrupt file is bad input
        raise LoraFileError(f"LoRA file {path} could not be read as safetensors: {str(exc).splitlines()[0]}") from None


def layer_shapes(denoiser: nn.Module) -> dict[str, tuple]:
    """``layer name -> ("linear", out, in)`` or ``("conv", out, in, kh, kw)`` for every Linear / Conv2d of
    ``denoiser`` (a meta-device copy will do: only the layers' declared sizes are read)."""
    out = {}
    for name, m in denoiser.named_modules():
        if isinstance(m, nn.Linear):
            out[name] = ("linear", m.out_features, m.in_features)
        elif isinstance(m, nn.Conv2d):
            out[name] = ("conv", m.out_channels, m.in_channels, *m.kernel_size)
    return out


def to_peft(raw: dict[str, torch.Tensor], family: str, shapes: dict[str, tuple], source: str,
            prefix: str) -> dict[str, torch.Tensor]:
    """``raw`` (a file's tensors) as ``{<prefix>.<layer>.lora_A.weight: A, ...lora_B.weight: B}``, every key
    matched to a layer of ``shapes`` and every shape checked; `LoraFileError` naming the first problem."""
    if not raw:
        raise LoraFileError(f"LoRA file {source} holds no tensors")
    text = sorted(k for k in raw if _TEXT.match(k))
    if text:
        raise LoraFileError(f"LoRA file {source} has {len(text)} text-encoder keys (e.g. {text[0]}): the harness "
                            "applies LoRAs to the denoiser only")
    if all(_PEFT.match(k) for k in raw):
        pairs = _peft_pairs(raw, source, family)
    elif any(k.endswith(".lora_down.weight") for k in raw):
        pairs = _kohya_pairs(raw, family, shapes, source)
    else:
        odd = next(k for k in sorted(raw) if not _PEFT.match(k))
        raise LoraFileError(f"LoRA file {source}: key {odd!r} is neither diffusers/peft "
                            "(<layer>.lora_A.weight / lora_B.weight) nor kohya (lora_unet_<layer>.lora_down.weight)")
    out = {}
    for layer, (a, b) in sorted(pairs.items()):
        _check_pair(layer, a, b, shapes, source)
        out[f"{prefix}.{layer}.lora_A.weight"] = a
        out[f"{prefix}.{layer}.lora_B.weight"] = b
    return out


def _peft_pairs(raw: dict, source: str, family: str | None = None) -> dict[str, list]:
    """``{layer: [A, B]}`` of diffusers/peft keys; a prefix must be the family's denoiser, and no layer may
    be given twice (``transformer.x`` beside ``x``)."""
    from harness.lora import DENOISER

    pairs: dict[str, list] = {}
    for key, t in raw.items():
        prefix, layer, half = _PEFT.match(key).groups()
        if prefix is not None and family in DENOISER and prefix != DENOISER[family]:
            raise LoraFileError(f"LoRA file {source}: key {key!r} is for a {prefix}, and a {family} model's denoiser "
                                f"is its {DENOISER[family]}")
        slot = pairs.setdefault(layer, [None, None])
        index = 0 if half == "lora_A" else 1
        if slot[index] is not None:
            raise LoraFileError(f"LoRA file {source}: layer {layer} has two {half} weights (with and without "
                                "a prefix)")
        slot[index] = t
    return _complete(pairs, source, "lora_A", "lora_B")


def _kohya_pairs(raw: dict, family: str, shapes: dict, source: str) -> dict[str, list]:
    by_flat = {name.replace(".", "_"): name for name in shapes}
    pairs: dict[str, list] = {}
    alphas: dict[str, float] = {}
    unmatched = []
    for key, t in raw.items():
        m = _KOHYA.match(key)
        if m is None:
            raise LoraFileError(f"LoRA file {source}: key {key!r} mixes kohya keys with another format")
        layer = by_flat.get(m.group(2))
        if layer is None:
            unmatched.append(key)
            continue
        if m.group(3) == "alpha":
            alphas[layer] = float(t.float().reshape(-1)[0])
        else:
            pairs.setdefault(layer, [None, None])[0 if m.group(3).startswith("lora_down") else 1] = t
    if unmatched:
        if family == "flux":
            return _diffusers_flux(raw, source)
        raise LoraFileError(f"LoRA file {source}: {len(unmatched)} kohya keys name no layer of the denoiser "
                            f"(e.g. {unmatched[0]!r}); kohya keys must spell the diffusers layer names with '_'")
    pairs = _complete(pairs, source, "lora_down", "lora_up")
    for layer, alpha in alphas.items():
        if layer in pairs:
            a, b = pairs[layer]
            pairs[layer] = [a, (b.float() * (alpha / a.shape[0])).to(b.dtype)]
    return pairs


def _diffusers_flux(raw: dict, source: str) -> dict[str, list]:
    """kohya FLUX keys in Black Forest Labs' layer names, converted by diffusers (tensors in, tensors out)."""
    from diffusers import FluxPipeline

    try:
        converted = FluxPipeline.lora_state_dict(dict(raw))
    except Exception as exc:  # noqa: BLE001 - diffusers' converter refuses what it cannot map
        raise LoraFileError(f"LoRA file {source}: its kohya keys fit no layer of the denoiser and diffusers "
                            f"cannot convert them ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    converted = converted[0] if isinstance(converted, tuple) else converted
    bad = sorted(k for k in converted if not _PEFT.match(k))
    if bad:
        raise LoraFileError(f"LoRA file {source}: diffusers converted its kohya keys to {bad[0]!r}, which names "
                            "no denoiser layer")
    return _peft_pairs(converted, source)


def _complete(pairs: dict, source: str, first: str, second: str) -> dict:
    for layer, (a, b) in sorted(pairs.items()):
        if a is None or b is None:
            raise LoraFileError(f"LoRA file {source}: layer {layer} has no {first if a is None else second} weight")
    return pairs


def _check_pair(layer: str, a: torch.Tensor, b: torch.Tensor, shapes: dict, source: str) -> None:
    kind = shapes.get(layer)
    if kind is None:
        import difflib

        close = difflib.get_close_matches(layer, list(shapes), n=1, cutoff=0.6)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise LoraFileError(f"LoRA file {source}: layer {layer!r} is not a Linear or Conv2d layer of the "
                            f"denoiser.{hint}")
    if a.dim() == 0 or b.dim() == 0:
        raise LoraFileError(f"LoRA file {source}: layer {layer} has a scalar LoRA weight (A {tuple(a.shape)}, "
                            f"B {tuple(b.shape)}); A and B are matrices (rank x in, out x rank)")
    rank = a.shape[0]
    if kind[0] == "linear":
        want_a, want_b = (rank, kind[2]), (kind[1], rank)
    else:
        want_a, want_b = (rank, kind[2], kind[3], kind[4]), (kind[1], rank, 1, 1)
    if rank < 1 or tuple(a.shape) != want_a or tuple(b.shape) != want_b:
        raise LoraFileError(f"LoRA file {source}: layer {layer} is {kind[0]} {'x'.join(map(str, kind[1:]))} "
                            f"(out x in{' x kh x kw' if kind[0] == 'conv' else ''}) but its LoRA weights are "
                            f"A {tuple(a.shape)} and B {tuple(b.shape)} (expected A {want_a}, B {want_b})")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise LoraFileError(f"LoRA file {source}: layer {layer} has non-float LoRA weights ({a.dtype}, {b.dtype})")
