"""Structured-config schemas: the typed shape of every config group, registered with Hydra's ConfigStore.

Every YAML file under ``conf/`` starts with ``defaults: [base_<group>[_<choice>], _self_]``, so a typo in a
key or a value of the wrong type fails at composition. Each engine's options and each offload / compile
mode's options are the schema its module declares (`engines.options`); the node of group choice ``x`` is
``base_<group>_<x>``. Semantic checks (names, ranges, dtypes, devices, stores, paths) are
`harness.validate`'s.
"""
from __future__ import annotations

import dataclasses
import secrets
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


def _doc(text: str, default: Any = MISSING, factory=None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelConfig:
    name: str = _doc("config name of the model (letters, digits, '.', '_', '-')")
    family: str = _doc("model family (flux, sdxl, qwen-image, sd3, wan, ...): a synthetic architecture's family "
                       "must match it")
    pipeline: str = _doc("the diffusers pipeline class that runs the model (e.g. FluxPipeline, QwenImagePipeline)")
    denoiser: str = _doc("the pipeline component that denoises (transformer or unet): engine.components' "
                         "`denoiser`, the target of compile modes", "transformer")
    path: Optional[str] = _doc("a real checkpoint: a local diffusers folder or a Hugging Face repo id in the local "
                               "cache (loaded offline); null = the synthetic checkpoint named by `synthetic`", None)
    synthetic: str = _doc("synthetic architecture: conf/architectures/<name>.yaml (harness.synthetic.ARCHITECTURES)")
    resolution_factor: int = _doc("images must be a multiple of this many pixels per side", 16)
    guidance_scale: Optional[float] = _doc("guidance the model runs with (FLUX: distilled guidance; SDXL, SD3: CFG "
                                           "scale); null = not passed", 3.5)
    max_sequence_length: Optional[int] = _doc("max text sequence length passed to the pipeline; null = not passed",
                                              512)
    frames: Optional[int] = _doc("video models: frames per video (num_frames); null = an image model", None)
    input_image: bool = _doc("an editing model: each call gets a deterministic synthetic input image of the "
                             "workload's size", False)
    call: Dict[str, Any] = _doc("further keyword arguments of every pipeline call (data: numbers, strings, lists)",
                                factory=dict)


@dataclass
class EngineConfig:
    name: str = _doc("quantization engine (python -m harness list)")
    mode: str = _doc("pre (quantize while loading) or post (after loading)", "post")
    components: list[str] = _doc("pipeline components to quantize; denoiser = transformer or unet",
                                 factory=lambda: ["denoiser"])
    options: Any = _doc("the engine's options (its schema)", factory=dict)


@dataclass
class OffloadConfig:
    name: str = _doc("offload mode: none | model | sequential | group | balanced", "none")
    options: Any = _doc("the mode's options (its schema)", factory=dict)


@dataclass
class LoraConfig:
    name: str = _doc("LoRA: none | file | synthetic", "none")
    options: Any = _doc("the choice's options (its schema)", factory=dict)


@dataclass
class CompileConfig:
    name: str = _doc("compile mode: none | default | max-autotune | reduce-overhead | regional | cudagraph | "
                     "regional-cudagraph", "none")


@dataclass
class TorchCompileConfig(CompileConfig):
    fullgraph: bool = _doc("torch.compile(fullgraph=...)", False)
    dynamic: bool = _doc("torch.compile(dynamic=...)", False)


#: Compile mode -> its schema.
COMPILE_SCHEMAS = {"none": CompileConfig, "default": TorchCompileConfig, "max-autotune": TorchCompileConfig,
                   "reduce-overhead": TorchCompileConfig, "regional": TorchCompileConfig,
                   "cudagraph": CompileConfig, "regional-cudagraph": TorchCompileConfig}


@dataclass
class WorkloadConfig:
    name: str = _doc("workload config name")
    prompts: list[str] = _doc("prompts, each generated with every seed")
    seeds: list[int] = _doc("seeds", factory=lambda: [0])
    steps: int = _doc("denoising steps per image", 4)
    height: int = _doc("image height (a multiple of the model's resolution factor)", 64)
    width: int = _doc("image width (a multiple of the model's resolution factor)", 64)
    warmup: int = _doc("untimed generations before the timed ones; the first gives first_call_s", 1)
    repeats: int = _doc("timed repetitions of the whole prompt x seed set", 1)
    prompt_set: Optional[str] = _doc("a shipped prompt set (conf/prompts/<name>.yaml) that replaces `prompts` "
                                     "(then prompts: []); null = the prompts listed here", None)
    prompt_count: Optional[int] = _doc("with prompt_set: its first this many prompts; null = all of them", None)


@dataclass
class MetricsConfig:
    psnr: bool = _doc("PSNR vs BF16", True)
    ssim: bool = _doc("SSIM vs BF16", True)
    ms_ssim: bool = _doc("MS-SSIM vs BF16", True)
    lpips: bool = _doc("LPIPS (AlexNet + v0.1 linear layers), when the weights are on disk", True)
    lpips_alexnet_path: Optional[str] = _doc("AlexNet weights file; null = the torch hub cache", None)
    lpips_linear_path: Optional[str] = _doc("LPIPS v0.1 linear layers; null = the lpips package's", None)
    clip: bool = _doc("CLIP score with a local CLIP model", True)
    clip_model: str = _doc("CLIP model: a folder or a Hugging Face cache id (offline)",
                           "openai/clip-vit-large-patch14")
    save_images: bool = _doc("keep generated images (PNG) in the run directory", True)


@dataclass
class RunConfig:
    device: str = _doc("auto (cuda when available, else cpu) | cpu | cuda | cuda:N", "auto")
    timeout_s: float = _doc("per-cell wall-clock limit, seconds", 1800.0)
    store: str = _doc("result store: an SQLite file or a postgresql:// URL",
                      "${oc.env:HARNESS_STORE,results/results.sqlite}")
    cache_dir: str = _doc("synthetic checkpoints, BF16 references and engine conversions",
                          "${oc.env:HARNESS_CACHE,.cache/harness}")
    force: bool = _doc("re-run a cell even when the store already has it", False)
    gpu_memory_fraction: Optional[float] = _doc("cap on GPU memory as a fraction of the card (simulated smaller "
                                                "GPU); null = no cap", None)
    gpu_memory_gib: Optional[float] = _doc("the same cap in GiB; at most one of the two", None)
    host_memory_limit_gib: Optional[float] = _doc("cap on the cell process's address space (RLIMIT_AS): a host "
                                                  "out-of-memory then ends the cell as oom", None)


@dataclass
class HarnessConfig:
    model: ModelConfig = MISSING
    engine: EngineConfig = MISSING
    offload: OffloadConfig = MISSING
    compile: CompileConfig = MISSING
    lora: LoraConfig = MISSING
    workload: WorkloadConfig = MISSING
    metrics: MetricsConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    #: Weight type in the engine's own vocabulary; None = the engine's default.
    dtype: Optional[str] = None


def mutable(schema: type, name: str) -> type:
    """A non-frozen copy of option schema ``schema`` with resolved types (OmegaConf makes frozen
    dataclasses read-only, and overrides must apply)."""
    hints = typing.get_type_hints(schema)
    specs = []
    for f in dataclasses.fields(schema):
        if "env" in f.metadata:  # resolved at composition, like the config's other environment defaults
            default = field(default=f"${{oc.env:{f.metadata['env']},{f.metadata['default']}}}", metadata=f.metadata)
        elif f.default is not dataclasses.MISSING:
            default = field(default=f.default, metadata=f.metadata)
        else:
            default = field(default_factory=f.default_factory, metadata=f.metadata)
        specs.append((f.name, hints[f.name], default))
    return dataclasses.make_dataclass(name, specs)


#: Name of a composed node class -> (what it configures, its schema), for composition-error messages.
NODE_SCHEMAS: dict[str, tuple[str, type]] = {}


def _node(base: type, options_schema: type, name: str, owner: str) -> type:
    options = mutable(options_schema, f"{name}Options")
    NODE_SCHEMAS[options.__name__] = (owner, options_schema)
    return dataclasses.make_dataclass(name, [("options", options, field(default_factory=options))], bases=(base,))


def engine_nodes() -> dict[str, type]:
    """Engine name -> its group node (EngineConfig with the engine's typed options)."""
    from engines.registry import ENGINES, get_engine_class

    return {name: _node(EngineConfig, get_engine_class(name).options, f"{name.title()}EngineConfig",
                        f"engine '{name}'") for name in ENGINES}


def offload_nodes() -> dict[str, type]:
    from harness.offload import options as offload_options

    return {name: _node(OffloadConfig, schema, f"{name.title()}OffloadConfig", f"offload '{name}'")
            for name, schema in offload_options.SCHEMAS.items()}


def lora_nodes() -> dict[str, type]:
    from harness.lora import options as lora_options

    return {name: _node(LoraConfig, schema, f"{name.title()}LoraConfig", f"lora '{name}'")
            for name, schema in lora_options.SCHEMAS.items()}


def _engine_dtype(engine: str, dtype) -> str:
    """Run-directory names show the dtype a run really uses (the engine default when dtype is null)."""
    if dtype not in (None, "None", "null", ""):
        return str(dtype)
    from engines.registry import ENGINES, get_engine_class

    return get_engine_class(engine).default_dtype if engine in ENGINES else "default"


_registered = False


def register() -> None:
    """Register every schema and the resolvers the configs use (``${uid:}``, ``${engine_dtype:...}``,
    ``${mul:a,b}``)."""
    global _registered
    if _registered:
        return
    OmegaConf.register_new_resolver("engine_dtype", _engine_dtype, replace=True)
    # ``${mul:a,b}``: model configs derive call arguments from the workload (FLUX.1 Kontext's max_area).
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
    # Cached per config (Hydra copies the cache into every job of a sweep): one id per invocation.
    OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(4), use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=HarnessConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    for name, node in engine_nodes().items():
        cs.store(group="engine", name=f"base_engine_{name}", node=node)
    for name, node in offload_nodes().items():
        cs.store(group="offload", name=f"base_offload_{name}", node=node)
    for name, node in lora_nodes().items():
        cs.store(group="lora", name=f"base_lora_{name}", node=node)
    cs.store(group="compile", name="base_compile_none", node=CompileConfig)
    cs.store(group="compile", name="base_compile_torch", node=TorchCompileConfig)
    cs.store(group="workload", name="base_workload", node=WorkloadConfig)
    cs.store(group="metrics", name="base_metrics", node=MetricsConfig)
    _registered = True
