"""In the cell: load a LoRA into the quantized pipeline the way the engine's users would, prove where it went,
and take it out again.

`state_dicts` builds the adapters (a synthetic LoRA drawn for the loaded denoiser, or the user's files read
and matched as in validation); `load` hands them to the engine (`engines.base.Engine.load_lora`, and
`fuse_lora` when asked), then checks that every layer the LoRA names is adapted (a peft layer) or, fused,
that the weights changed: a LoRA is never dropped silently. `unload` removes it (`Engine.unload_lora`).
"""
from __future__ import annotations

from torch import nn

from engines.base import EngineError
from harness.lora import DENOISER, files, synthetic
from harness.lora.fingerprint import fingerprint

#: What each way of applying a LoRA did, in words (the record's ``lora_report.what``).
FUSED_EFFECT = {"fused": "fused into the weights, which stay in their compute dtype",
                "fused-requantized": "fused into the dequantized weights, which were then quantized again"}


def state_dicts(lora: dict, denoiser: nn.Module, family: str) -> list[tuple[str, dict, float]]:
    """``(adapter name, diffusers-keyed state dict, adapter weight)`` per LoRA of the cell."""
    prefix = DENOISER[family]
    options = lora["options"]
    if lora["name"] == "synthetic":
        state = synthetic.state_dict(denoiser, prefix, options["rank"], options["strength"], options["seed"],
                                     options["convs"])
        if not state:
            raise EngineError("the synthetic LoRA found no attention or feed-forward layer in the denoiser")
        return [("synthetic", state, options["scale"])]
    shapes = files.layer_shapes(denoiser)
    scales = options["scales"] or [1.0] * len(options["paths"])
    return [(f"file{i}", files.to_peft(files.read(path), family, shapes, path, prefix), scale)
            for i, (path, scale) in enumerate(zip(options["paths"], scales))]


def adapted_layers(denoiser: nn.Module) -> dict[str, nn.Module]:
    """``layer name -> the layer peft wraps`` for every LoRA-adapted layer of ``denoiser``."""
    return {name: m.base_layer for name, m in denoiser.named_modules() if hasattr(m, "base_layer")
            and hasattr(m, "lora_A")}


def load(pipe, engine, lora: dict, family: str) -> dict:
    """Apply the cell's LoRA; return the start of ``lora_report`` (how, what, counts). `EngineError` when a
    layer the LoRA names was not adapted, or fusing left the weights as they were."""
    component = DENOISER[family]
    denoiser = getattr(pipe, component)
    adapters = state_dicts(lora, denoiser, family)
    wanted = sorted({k[len(component) + 1:].rsplit(".lora_", 1)[0] for _, s, _ in adapters for k in s})
    engine.load_lora(pipe, component, adapters)
    denoiser = getattr(pipe, component)
    adapted = adapted_layers(denoiser)
    missing = [name for name in wanted if name not in adapted]
    if missing:
        raise EngineError(f"the LoRA names {len(wanted)} layers but {len(missing)} were not adapted "
                          f"(e.g. {missing[0]}): refusing to report it as applied")
    on_quantized = sum(engine.count_quantized(layer)[0] > 0 for layer in adapted.values())
    report = {"how": "adapter", "what": engine.lora_adapter_effect, "adapters": [a[0] for a in adapters],
              "adapter_weights": [a[2] for a in adapters], "lora_layers": len(wanted),
              "on_quantized_layers": on_quantized,
              "lora_params": sum(t.numel() for _, s, _ in adapters for t in s.values())}
    if engine.is_reference:
        report["what"] = "kept beside the BF16 layer: peft wraps it and adds the LoRA's output"
    if lora["options"].get("fuse"):
        before = {name: fingerprint(layer) for name, layer in adapted.items()}
        how = engine.fuse_lora(pipe, component, report["adapters"])
        denoiser = getattr(pipe, component)
        layers = dict(denoiser.named_modules())
        unchanged = [n for n in wanted if n in layers and fingerprint(_base(layers[n])) == before[n]]
        if unchanged:
            raise EngineError(f"fusing the LoRA left {len(unchanged)} of {len(wanted)} layers' weights unchanged "
                              f"(e.g. {unchanged[0]}): the LoRA would be dropped silently")
        report.update(how=how, what=FUSED_EFFECT[how])
    return report


def _base(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)


def unload(pipe, engine, family: str) -> None:
    engine.unload_lora(pipe, DENOISER[family])
