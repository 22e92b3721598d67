"""Semantic validation of a composed config, before anything is loaded or written.

Turns the Hydra config into a `Cell`: plain data with every default resolved (engine dtype,
component names, checkpoint folder), or raises `ConfigError` with one message naming the valid
choices. Nothing is written before validation passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from engines.base import DENOISERS
from engines.registry import available, get_engine_class, unknown_name_message
from harness import checkpoint
from harness.synthetic import ARCHITECTURES

OFFLOAD_MODES = ("none", "model", "sequential", "group", "balanced")
COMPILE_MODES = ("none", "default", "max-autotune", "regional")
FAMILY_COMPONENTS = {
    "flux": ("transformer", "text_encoder", "text_encoder_2", "vae"),
    "sdxl": ("unet", "text_encoder", "text_encoder_2", "vae"),
}


class ConfigError(ValueError):
    """A config that cannot describe a run. The message is shown to the user as is."""


@dataclass
class Cell:
    """Everything one run needs, resolved and checked. Plain data (crosses the fork)."""

    config: dict[str, Any]
    engine: str
    dtype: str
    mode: str
    components: list[str]
    engine_options: dict[str, Any]
    model: dict[str, Any]
    offload: dict[str, Any]
    compile: dict[str, Any]
    workload: dict[str, Any]
    metrics: dict[str, Any]
    run: dict[str, Any]
    #: Real checkpoint folder, or None for the synthetic one (built in the cell process).
    checkpoint_path: str | None = None
    requires: list[str] = field(default_factory=list)

    @property
    def is_reference(self) -> bool:
        return (self.engine == "bf16" and self.dtype == "bf16" and self.offload["name"] == "none"
                and self.compile["name"] == "none")


def validate(cfg: DictConfig) -> Cell:
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    eng, model, work = data["engine"], data["model"], data["workload"]

    engine_name = eng["name"]
    if engine_name not in available():
        raise ConfigError(unknown_name_message("engine", engine_name, [e for e in available() if e != "fault"]))
    engine_cls = get_engine_class(engine_name)
    dtype = data.get("dtype") or engine_cls.default_dtype
    if dtype not in engine_cls.dtypes:
        raise ConfigError(f"engine '{engine_name}' does not support dtype '{dtype}'. "
                          f"Supported: {', '.join(engine_cls.dtypes)}")
    if eng["mode"] not in ("pre", "post"):
        raise ConfigError(f"engine.mode must be 'pre' or 'post', not {eng['mode']!r}")
    if eng["mode"] not in engine_cls.modes:
        raise ConfigError(f"engine '{engine_name}' has no '{eng['mode']}' mode; it has: {', '.join(engine_cls.modes)}")
    unknown = sorted(set(eng.get("options") or {}) - set(engine_cls.options))
    if unknown:
        raise ConfigError(f"engine '{engine_name}' has no option {', '.join(unknown)}. "
                          f"Options: {', '.join(sorted(engine_cls.options)) or 'none'}")

    family = model["family"]
    if family not in FAMILY_COMPONENTS:
        raise ConfigError(unknown_name_message("model family", family, list(FAMILY_COMPONENTS)))
    components = _resolve_components(eng["components"], family, engine_cls)

    checkpoint_path = None
    if model.get("path"):
        try:
            folder = checkpoint.resolve(model["path"])
            checkpoint.check(folder)
        except checkpoint.CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        checkpoint_path = str(folder)
    elif model["synthetic"] not in ARCHITECTURES:
        raise ConfigError(unknown_name_message("synthetic architecture", model["synthetic"], list(ARCHITECTURES)))
    elif ARCHITECTURES[model["synthetic"]].family != family:
        raise ConfigError(f"model '{model['name']}': synthetic architecture '{model['synthetic']}' is a "
                          f"{ARCHITECTURES[model['synthetic']].family} model, not {family}")

    if data["offload"]["name"] not in OFFLOAD_MODES:
        raise ConfigError(unknown_name_message("offload mode", data["offload"]["name"], list(OFFLOAD_MODES)))
    if data["compile"]["name"] not in COMPILE_MODES:
        raise ConfigError(unknown_name_message("compile mode", data["compile"]["name"], list(COMPILE_MODES)))
    _check_workload(work, model)
    run = data["run"]
    if not run["timeout_s"] > 0:
        raise ConfigError(f"run.timeout_s must be positive, got {run['timeout_s']}")
    frac = run.get("gpu_memory_fraction")
    if frac is not None and not 0 < frac <= 1:
        raise ConfigError(f"run.gpu_memory_fraction must be in (0, 1], got {frac}")
    cap_gib = run.get("gpu_memory_gib")
    if cap_gib is not None and not cap_gib > 0:
        raise ConfigError(f"run.gpu_memory_gib must be positive, got {cap_gib}")
    if frac is not None and cap_gib is not None:
        raise ConfigError("set run.gpu_memory_fraction or run.gpu_memory_gib, not both "
                          f"(got {frac} and {cap_gib})")
    host_cap = run.get("host_memory_limit_gib")
    if host_cap is not None and not host_cap > 0:
        raise ConfigError(f"run.host_memory_limit_gib must be positive, got {host_cap}")
    if run["device"] != "auto" and not (run["device"] == "cpu" or run["device"].startswith("cuda")):
        raise ConfigError(f"run.device must be auto, cpu, cuda or cuda:N, not {run['device']!r}")

    return Cell(config=data, engine=engine_name, dtype=dtype, mode=eng["mode"], components=components,
                engine_options=dict(eng.get("options") or {}), model=model, offload=data["offload"],
                compile=data["compile"], workload=work, metrics=data["metrics"], run=run,
                checkpoint_path=checkpoint_path, requires=list(engine_cls.requires))


def _resolve_components(requested: list[str], family: str, engine_cls) -> list[str]:
    present = FAMILY_COMPONENTS[family]
    denoiser = next(c for c in present if c in DENOISERS)
    out: list[str] = []
    for name in requested:
        name = denoiser if name == "denoiser" else name
        if name not in present:
            raise ConfigError(f"component '{name}' is not part of a {family} pipeline. "
                              f"Components: denoiser, {', '.join(present)}")
        if name not in engine_cls.components:
            raise ConfigError(f"engine '{engine_cls.name}' cannot quantize '{name}'; "
                              f"it quantizes: {', '.join(engine_cls.components)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("engine.components is empty: name at least one component (e.g. [denoiser])")
    return out


def _check_workload(work: dict, model: dict) -> None:
    factor = model["resolution_factor"]
    if work["steps"] < 1:
        raise ConfigError(f"workload.steps must be at least 1, got {work['steps']}")
    for side in ("height", "width"):
        value = work[side]
        if value <= 0 or value % factor:
            raise ConfigError(f"workload.{side}={value} is not a positive multiple of {factor}, "
                              f"the resolution factor of model '{model['name']}'")
    if not work["prompts"] or not all(isinstance(p, str) and p.strip() for p in work["prompts"]):
        raise ConfigError("workload.prompts must be a non-empty list of non-empty strings")
    if not work["seeds"]:
        raise ConfigError("workload.seeds must name at least one seed")
    if work["warmup"] < 0 or work["repeats"] < 1:
        raise ConfigError(f"workload.warmup must be >= 0 and workload.repeats >= 1 "
                          f"(got {work['warmup']}, {work['repeats']})")
