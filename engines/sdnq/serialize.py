"""Save a quantized model and load it back: ``model.safetensors`` + ``sdnq_config.json``.

``sdnq_config.json`` holds the format version, the `SDNQConfig`, one entry per quantized layer
(weight type, group size, shapes: enough to rebuild empty layers) and, for diffusers models, the
model class and its config. Loading builds the model on the meta device, swaps in empty SDNQ
layers and assigns the stored tensors, so outputs are bit-identical to the saved model's.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engines.sdnq.config import SDNQConfig
from engines.sdnq.layers import SDNQLayerMixin, empty_layer

FORMAT_VERSION = 1
CONFIG_NAME = "sdnq_config.json"
WEIGHTS_NAME = "model.safetensors"


def save_quantized(model: nn.Module, directory: str | Path, config: SDNQConfig | None = None) -> Path:
    from safetensors.torch import save_file

    config = config or getattr(model, "_sdnq_config", None)
    if config is None:
        raise ValueError("no SDNQConfig given and the model carries none (quantize it with SDNQ first)")
    if any(hasattr(m, "base_layer") for m in model.modules()):
        raise ValueError("the model has LoRA adapters loaded: unload them before saving")
    if any(getattr(m, "fused_projections", False) for m in model.modules()):
        raise ValueError("the model's attention projections are fused (fuse_qkv): save it unfused; fusing is "
                         "applied when a checkpoint is loaded with fuse_qkv set")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = {name: m.layer_config() for name, m in model.named_modules() if isinstance(m, SDNQLayerMixin)}
    meta = {"format": "sdnq", "version": FORMAT_VERSION, "config": config.to_dict(), "layers": layers,
            "class": f"{type(model).__module__}:{type(model).__qualname__}"}
    if hasattr(model, "config") and hasattr(model, "from_config"):
        meta["model_config"] = {k: v for k, v in dict(model.config).items()}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "sdnq_version": str(FORMAT_VERSION)})
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=1, default=_jsonable))
    return directory


def _jsonable(value):
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return str(value)


def is_quantized_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_NAME).is_file()


def load_quantized(directory: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_quantized`. ``model``: an unquantized skeleton (any device,
    meta is best) for classes that are not diffusers models; diffusers models are rebuilt from
    the stored class and config."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / CONFIG_NAME).read_text())
    if meta.get("format") != "sdnq" or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{directory} is not an SDNQ v{FORMAT_VERSION} checkpoint")
    config = SDNQConfig.from_dict(meta["config"])
    if model is None:
        cls = model_class(meta.get("class"))
        if "model_config" not in meta:
            raise ValueError("this checkpoint needs a model skeleton: load_quantized(dir, model=...)")
        with init_empty_weights():
            model = cls.from_config(meta["model_config"])
    for name, layer_cfg in meta["layers"].items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, empty_layer(layer_cfg, config, device="meta"))
    state = load_file(str(directory / WEIGHTS_NAME), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if _is_meta(model, k)]
    if missing or unexpected:
        raise KeyError(f"checkpoint/model mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model._sdnq_config = config
    return model.to(device).eval()


def model_class(name) -> type:
    """The model class a checkpoint names (``module:Class``): only a public diffusers model class is built,
    looked up by name in diffusers' namespace; anything else is refused (a checkpoint never runs code)."""
    import diffusers

    module_name, _, qualname = str(name).partition(":")
    cls = getattr(diffusers, qualname, None) if qualname.isidentifier() else None
    if (not module_name.startswith("diffusers.") or not isinstance(cls, type)
            or not issubclass(cls, diffusers.ModelMixin)):
        raise ValueError(f"SDNQ checkpoint names model class {name!r}: only diffusers model classes are "
                         "loaded; pass a skeleton with load_quantized(dir, model=...) for others")
    return cls


def _is_meta(model: nn.Module, key: str) -> bool:
    owner, _, attr = key.rpartition(".")
    t = getattr(model.get_submodule(owner) if owner else model, attr, None)
    return isinstance(t, torch.Tensor) and t.is_meta
