"""The validation of a cell's ``lora`` block, in the parent, before anything is loaded or written.

`resolve` turns the composed block into the cell's: options resolved against the choice's schema, and for
``lora=file`` every file checked (an existing .safetensors file, keys and shapes that fit the model's
denoiser, read without importing anything) and recorded with its absolute path, content hash, key format
and rank. The denoiser's layers are read from a meta-device instance built from its config (the synthetic
architecture's, or the checkpoint's ``<denoiser>/config.json``): no weights are loaded.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path

from harness.lora import DENOISER, files
from harness.lora.options import check_options


def resolve(lora: dict | None, model: dict, checkpoint_path: str | None) -> dict:
    """The cell's LoRA block ``{"name", "options"[, "files"]}``, or `ValueError` with one line. On a family no
    LoRA applies to, the block carries ``unsupported`` (the reason) and the cell ends `unsupported`."""
    lora = lora or {"name": "none"}
    name = lora.get("name", "none")
    options = check_options(name, lora.get("options"))
    out = {"name": name, "options": options}
    if name != "none" and model.get("family") not in DENOISER:
        # a cell of its own that ends `unsupported` (a sweep over families goes on), not rejected input
        out["unsupported"] = (f"lora={name}: LoRAs apply to the denoiser of a {' or '.join(DENOISER)} model, not "
                              f"of a {model.get('family')} model")
        return out
    if name != "file":
        return out
    paths = options["paths"]
    if not paths:
        raise ValueError("lora=file needs lora.options.paths=[/path/to/lora.safetensors, ...]")
    scales = options["scales"]
    if scales is not None and len(scales) != len(paths):
        raise ValueError(f"lora.options.scales has {len(scales)} values for {len(paths)} files: give one per file "
                         "(or null for 1.0 each)")
    if any(s < 0 for s in scales or []):
        raise ValueError(f"lora.options.scales must be >= 0, got {scales}")
    shapes = denoiser_shapes(model["family"], model.get("synthetic"), checkpoint_path)
    checked = [describe(str(files.check_path(p)), model["family"], shapes) for p in paths]
    options["paths"] = [c["path"] for c in checked]
    out["files"] = checked
    return out


def describe(path: str, family: str, shapes: dict) -> dict:
    """What the cell key and the record keep of one LoRA file: path, hash, format, layers, rank."""
    p = Path(path)
    stat = p.stat()
    return dict(_describe(path, stat.st_size, stat.st_mtime_ns, family, json.dumps(sorted(shapes.items()))))


@functools.lru_cache(maxsize=64)
def _describe(path: str, size: int, mtime_ns: int, family: str, shapes_json: str) -> tuple:
    shapes = {k: tuple(v) for k, v in json.loads(shapes_json)}
    raw = files.read(path)
    peft = files.to_peft(raw, family, shapes, path, DENOISER[family])
    ranks = sorted({int(t.shape[0]) for k, t in peft.items() if k.endswith("lora_A.weight")})
    kohya = any(k.endswith(".lora_down.weight") for k in raw)
    return (("path", path), ("sha256", files.sha256(path)), ("format", "kohya" if kohya else "diffusers"),
            ("layers", len(peft) // 2), ("rank", ranks[0] if len(ranks) == 1 else ranks))


def denoiser_shapes(family: str, synthetic: str | None, checkpoint_path: str | None) -> dict[str, tuple]:
    """`files.layer_shapes` of the model's denoiser, built on the meta device from its config."""
    denoiser = DENOISER[family]
    if checkpoint_path:
        config_file = Path(checkpoint_path) / denoiser / "config.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"lora=file: cannot read the denoiser's config {config_file}: {exc}") from None
    else:
        from harness.synthetic import ARCHITECTURES

        config = ARCHITECTURES[synthetic].components[denoiser]
    return dict(_shapes(family, json.dumps(config, sort_keys=True)))


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: importing diffusers' models imports the quantization backends, which
    print start-up notices, and a rejected config must stay one line on stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@functools.lru_cache(maxsize=8)
def _shapes(family: str, config_json: str) -> tuple:
    import torch

    config = {k: v for k, v in json.loads(config_json).items() if not k.startswith("_")}
    with _quiet_stderr():
        from diffusers import FluxTransformer2DModel, UNet2DConditionModel

        cls = {"flux": FluxTransformer2DModel, "sdxl": UNet2DConditionModel}[family]
        with torch.device("meta"):
            model = cls.from_config(config)
    return tuple(files.layer_shapes(model).items())
