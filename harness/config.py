"""Structured-config schemas (registered with Hydra's ConfigStore).

Every YAML file under ``conf/`` starts with ``defaults: [base_<group>, _self_]`` so a typo in a key or
a value of the wrong type fails at composition time with Hydra's own message.
Semantic checks (unknown engine, unsupported dtype, impossible workload) live in `harness.validate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    #: "flux" or "sdxl": which diffusers pipeline class and synthetic architecture.
    family: str = MISSING
    #: A real checkpoint: a local diffusers folder or a Hugging Face repo id found in the local cache
    #: (loaded offline). None = build (once) and use the synthetic checkpoint named by `synthetic`.
    path: Optional[str] = None
    #: Name of the synthetic architecture in `harness.synthetic.ARCHITECTURES`.
    synthetic: str = MISSING
    #: Images must be a multiple of this many pixels per side.
    resolution_factor: int = 16
    #: Guidance the model is run with (FLUX: distilled guidance; SDXL: CFG scale).
    guidance_scale: float = 3.5
    #: Max sequence length of the second text encoder (T5 for FLUX).
    max_sequence_length: int = 512


@dataclass
class EngineConfig:
    name: str = MISSING
    #: "pre" (quantize while loading) or "post" (after loading).
    mode: str = "post"
    #: Pipeline components to quantize: transformer / unet / text_encoder / text_encoder_2 / vae.
    #: "denoiser" means whichever of transformer / unet the model has.
    components: list[str] = field(default_factory=lambda: ["denoiser"])
    #: Engine-specific options; only keys the engine declares are accepted.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OffloadConfig:
    #: none | model | sequential | group | balanced
    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompileConfig:
    #: none | default | max-autotune | regional
    name: str = "none"
    fullgraph: bool = False
    dynamic: bool = False


@dataclass
class WorkloadConfig:
    name: str = MISSING
    prompts: list[str] = MISSING
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 4
    height: int = 64
    width: int = 64
    #: Untimed generations before the measured ones (warm-up; the first one gives first_call_s).
    warmup: int = 1
    #: Timed repetitions of the whole prompt x seed set.
    repeats: int = 1


@dataclass
class MetricsConfig:
    psnr: bool = True
    ssim: bool = True
    ms_ssim: bool = True
    #: LPIPS (AlexNet + v0.1 linear layers). Paths to local weight files; None = look in the torch hub
    #: cache and the lpips package; never downloaded.
    lpips: bool = True
    lpips_alexnet_path: Optional[str] = None
    lpips_linear_path: Optional[str] = None
    #: CLIP score with a local CLIP model (folder or HF cache id, loaded offline).
    clip: bool = True
    clip_model: str = "openai/clip-vit-large-patch14"
    #: Keep generated images (PNG) in the run directory.
    save_images: bool = True


@dataclass
class RunConfig:
    #: auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    device: str = "auto"
    #: Per-cell wall-clock limit in seconds.
    timeout_s: float = 1800.0
    #: SQLite file (or, later, a database URL) every result is appended to.
    store: str = "${oc.env:HARNESS_STORE,results/results.sqlite}"
    #: Where synthetic checkpoints and BF16 reference images are cached.
    cache_dir: str = "${oc.env:HARNESS_CACHE,.cache/harness}"
    #: Re-run a cell even when the store already has it for the same config and versions.
    force: bool = False
    #: Run the cell in a forked child (isolation). Off only for debugging.
    isolate: bool = True
    #: Cap on GPU memory as a fraction of the card (simulated smaller GPU); None = no cap.
    gpu_memory_fraction: Optional[float] = None
    #: The same cap in GiB ("does it fit in 24 GB?"); at most one of the two may be set.
    gpu_memory_gib: Optional[float] = None
    #: Cap on the cell process's address space in GiB (RLIMIT_AS): a host out-of-memory then ends the
    #: cell with status oom instead of waking the kernel's OOM killer. None = no cap.
    host_memory_limit_gib: Optional[float] = None


@dataclass
class HarnessConfig:
    model: ModelConfig = MISSING
    engine: EngineConfig = MISSING
    offload: OffloadConfig = MISSING
    compile: CompileConfig = MISSING
    workload: WorkloadConfig = MISSING
    metrics: MetricsConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    #: Weight type in the engine's own vocabulary; None = the engine's default.
    dtype: Optional[str] = None


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=HarnessConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="engine", name="base_engine", node=EngineConfig)
    cs.store(group="offload", name="base_offload", node=OffloadConfig)
    cs.store(group="compile", name="base_compile", node=CompileConfig)
    cs.store(group="workload", name="base_workload", node=WorkloadConfig)
    cs.store(group="metrics", name="base_metrics", node=MetricsConfig)
