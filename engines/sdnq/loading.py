"""Pre mode: build a component on the meta device and quantize each weight as it is read.

Host memory stays near the quantized size: tensors are read one at a time from the component's
safetensors files (memory-mapped), target weights are quantized immediately and only their packed
form is kept. `stream_into` is the core and takes any iterator of (name, tensor), so the benchmark
can feed it tensors generated directly on the GPU.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from engines.sdnq.apply import _skipped, is_candidate, quantize_layer
from engines.sdnq.config import SDNQConfig
from engines.sdnq.layers import SDNQConv2d, SDNQLinear


def weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of a diffusers/transformers component folder (sharded or not)."""
    stem_variants = [f".{variant}" if variant else ""]
    for prefix in ("diffusion_pytorch_model", "model"):
        for v in stem_variants:
            index = folder / f"{prefix}{v}.safetensors.index.json"
            if index.is_file():
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                return [folder / s for s in shards]
            single = folder / f"{prefix}{v}.safetensors"
            if single.is_file():
                return [single]
    raise FileNotFoundError(f"no safetensors weights in {folder} (pre mode reads safetensors only)")


def iter_safetensors(files: Iterable[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


@torch.no_grad()
def stream_into(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor]], config: SDNQConfig,
                dtype: torch.dtype, device: torch.device | str = "cpu") -> nn.Module:
    """Fill a meta-device ``model`` from ``tensors``; target layers are quantized on arrival.

    Floating tensors are cast to ``dtype`` first (what ``from_pretrained(torch_dtype=...)`` would
    give), so pre and post mode produce identical quantized weights. The model ends on ``device``.
    """
    from accelerate.utils import set_module_tensor_to_device

    device = torch.device(device)
    qdevice = config.quantize_on() or device
    targets = {name: m for name, m in model.named_modules()
               if is_candidate(m, config) and not _skipped(name, config)}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors:
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        owner, _, attr = key.rpartition(".")
        layer = targets.get(owner)
        if layer is None or attr not in ("weight", "bias"):
            set_module_tensor_to_device(model, key, device, value=tensor, dtype=tensor.dtype)
            continue
        parts = pending.setdefault(owner, {})
        parts[attr] = tensor.to(device)
        needed = {"weight"} | ({"bias"} if layer.bias is not None else set())
        if needed <= parts.keys():
            del pending[owner]
            _replace(model, owner, _quantized(layer, parts, config, qdevice))
    if pending:
        raise KeyError(f"checkpoint lacks parts of layers {sorted(pending)[:5]}")
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")
    return model.eval()


def _quantized(layer: nn.Module, parts: dict, config: SDNQConfig, qdevice: torch.device) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return SDNQLinear.from_weight(parts["weight"], parts.get("bias"), config, qdevice)
    return SDNQConv2d.from_conv(layer, config, qdevice, parts["weight"], parts.get("bias"))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def load_quantized_component(cls: type, path: str, subfolder: str | None, config: SDNQConfig,
                             torch_dtype: torch.dtype | None = None, variant: str | None = None,
                             device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """Pre-mode load of one component. Returns (model, how): ``how`` is "streamed" for diffusers
    models; transformers models are loaded with ``low_cpu_mem_usage`` and quantized layer by layer
    right after ("load-then-quantize"), since their checkpoints may rename keys on load."""
    from accelerate import init_empty_weights

    dtype = torch_dtype or config.compute_dtype
    folder = Path(path) / subfolder if subfolder else Path(path)
    if hasattr(cls, "load_config") and hasattr(cls, "from_config"):
        model_config = cls.load_config(path, subfolder=subfolder) if subfolder else cls.load_config(path)
        with init_empty_weights():
            model = cls.from_config(model_config)
        stream_into(model, iter_safetensors(weight_files(folder, variant)), config, dtype, device)
        return model, "streamed"
    from engines.sdnq.apply import quantize_model
    kwargs = {"subfolder": subfolder} if subfolder else {}
    model = cls.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=True, variant=variant,
                                use_safetensors=True, **kwargs)
    return quantize_model(model.to(device), config), "load-then-quantize"


__all__ = ["stream_into", "load_quantized_component", "weight_files", "iter_safetensors", "quantize_layer"]
