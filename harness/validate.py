"""Every check of a composed config, in one place, before anything is loaded or written.

`validate` turns a Hydra config into a `CellSpec` (every default resolved: engine dtype, options,
component names, checkpoint folder) or raises `ConfigError` with one message naming the valid choices.
It checks names that reach the file system, the engine and its dtype, mode, components and options, the
offload and compile modes and their options, the LoRA (options; files present, safetensors, keys and
shapes that fit the denoiser), the workload's bounds, the run settings (device present,
store reachable and writable), and the checkpoint (present, intact, naming only diffusers / transformers
classes). It writes nothing: a store that does not exist yet is only checked to be creatable.
"""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from engines.options import check as check_options
from engines.registry import available, get_engine_class, unknown_name_message, visible
from harness import checkpoint, prompts
from harness.errors import ConfigError, UnsupportedDtype
from harness.schema import COMPILE_SCHEMAS
from harness.spec import CellSpec
from harness.synthetic import ARCHITECTURES

#: A name that may become part of a path: letters, digits, '.', '_', '-'; no leading dot, no '..'.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
MAX_SIDE = 16384
MAX_STEPS = 10000


def check_name(what: str, value) -> str:
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"{what}={value!r} is not a safe name: use 1-80 letters, digits, '.', '_' or '-' "
                          "(starting with a letter or digit, no '..')")
    return value


def validate(cfg: DictConfig, check_environment: bool = True) -> CellSpec:
    """The `CellSpec` of ``cfg``. ``check_environment`` also checks the device and the store (off only
    where a config is inspected, never run)."""
    try:
        data = {key: _plain(cfg, key) for key in cfg.keys() if key != "hydra"}
    except Exception as exc:  # noqa: BLE001 - an interpolation that cannot resolve is bad input
        raise ConfigError(f"the config does not resolve: {str(exc).splitlines()[0]}") from None
    eng, model, work, run = data["engine"], data["model"], data["workload"], data["run"]

    engine_cls = _engine(eng["name"])
    dtype = data.get("dtype") or engine_cls.default_dtype
    if dtype not in engine_cls.dtypes:
        raise UnsupportedDtype(f"engine '{engine_cls.name}' does not support dtype {dtype!r}. "
                               f"Supported: {', '.join(engine_cls.dtypes)}")
    if eng["mode"] not in ("pre", "post"):
        raise ConfigError(f"engine.mode must be 'pre' or 'post', not {eng['mode']!r}")
    if eng["mode"] not in engine_cls.modes:
        raise ConfigError(f"engine '{engine_cls.name}' has no '{eng['mode']}' mode; it has: "
                          f"{', '.join(engine_cls.modes)}")
    eng["options"] = _options(engine_cls.options, eng.get("options"), f"engine '{engine_cls.name}'")

    for what, value in (("model.name", model["name"]), ("workload.name", work["name"])):
        check_name(what, value)
    checkpoint_path, present = _checkpoint(model)
    components = _resolve_components(eng["components"], model, present, engine_cls)

    data["offload"] = _offload(data["offload"])
    data["compile"] = _compile(data["compile"])
    data["lora"] = _lora(data.get("lora"), model, checkpoint_path)
    prompts.expand(work)
    _check_workload(work, model)
    _check_run(run)
    if check_environment:
        check_device(run["device"])
        check_store(run["store"])
        check_writable_dir("run.cache_dir", run["cache_dir"])

    if isinstance(run.get("store"), str):
        from harness.store import redact

        data["run"] = {**run, "store": redact(run["store"])}  # the record keeps no password
    return CellSpec(config=data, engine=engine_cls.name, dtype=dtype, mode=eng["mode"], components=components,
                    engine_options=eng["options"], model=model, offload=data["offload"], compile=data["compile"],
                    workload=work, metrics=data["metrics"], run=run, checkpoint_path=checkpoint_path,
                    lora=data["lora"])


def _plain(cfg: DictConfig, key: str):
    node = cfg._get_node(key)
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return cfg[key]


def _engine(name):
    if name not in available():
        raise ConfigError(unknown_name_message("engine", str(name), visible()))
    return get_engine_class(name)


def _options(schema: type, values, owner: str) -> dict:
    try:
        return check_options(schema, values, owner)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _offload(offload: dict) -> dict:
    from harness.offload import options as offload_options

    name = offload["name"]
    if name not in offload_options.SCHEMAS:
        raise ConfigError(unknown_name_message("offload mode", str(name), list(offload_options.SCHEMAS)))
    try:
        return {"name": name, "options": offload_options.check_options(name, offload.get("options"))}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _lora(lora: dict | None, model: dict, checkpoint_path: str | None) -> dict:
    """The LoRA block resolved and its files checked against the denoiser (`harness.lora.check`)."""
    from harness.lora.check import resolve

    try:
        return resolve(lora, model, checkpoint_path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _compile(comp: dict) -> dict:
    name = comp["name"]
    if name not in COMPILE_SCHEMAS:
        raise ConfigError(unknown_name_message("compile mode", str(name), list(COMPILE_SCHEMAS)))
    return comp


def _checkpoint(model: dict) -> tuple[str | None, list[str]]:
    """(the real checkpoint's folder or None for the synthetic one, the model's module components)."""
    family, pipeline = model["family"], model["pipeline"]
    if not checkpoint.is_pipeline_name(pipeline):
        raise ConfigError(f"model '{model['name']}': model.pipeline={pipeline!r} is not a diffusers pipeline class")
    if model.get("path"):
        try:
            folder = checkpoint.resolve(model["path"])
            present = checkpoint.module_components(checkpoint.check(folder))
        except checkpoint.CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        path: str | None = str(folder)
    else:
        if model["synthetic"] not in ARCHITECTURES:
            raise ConfigError(unknown_name_message("synthetic architecture", str(model["synthetic"]),
                                                   list(ARCHITECTURES)))
        arch = ARCHITECTURES[model["synthetic"]]
        if arch.family != family:
            raise ConfigError(f"model '{model['name']}': synthetic architecture '{model['synthetic']}' is a "
                              f"{arch.family} model, not {family}")
        if arch.pipeline != pipeline:
            raise ConfigError(f"model '{model['name']}': synthetic architecture '{model['synthetic']}' is run by "
                              f"{arch.pipeline}, not model.pipeline={pipeline}")
        path, present = None, arch.modules()
    if model["denoiser"] not in present:
        raise ConfigError(f"model '{model['name']}': model.denoiser={model['denoiser']!r} is not a component of "
                          f"the checkpoint; components: {', '.join(present)}")
    return path, present


def _resolve_components(requested: list[str], model: dict, present: list[str], engine_cls) -> list[str]:
    denoiser = model["denoiser"]
    out: list[str] = []
    for name in requested:
        name = denoiser if name == "denoiser" else name
        if name not in present:
            raise ConfigError(f"component '{name}' is not part of a {model['family']} pipeline. "
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
    if factor < 1:
        raise ConfigError(f"model.resolution_factor must be at least 1, got {factor}")
    if not 1 <= work["steps"] <= MAX_STEPS:
        raise ConfigError(f"workload.steps must be at least 1 and at most {MAX_STEPS}, got {work['steps']}")
    for side in ("height", "width"):
        value = work[side]
        if value <= 0 or value % factor or value > MAX_SIDE:
            raise ConfigError(f"workload.{side}={value} is not a positive multiple of {factor}, "
                              f"the resolution factor of model '{model['name']}' (at most {MAX_SIDE})")
    if not work["prompts"] or not all(isinstance(p, str) and p.strip() for p in work["prompts"]):
        raise ConfigError("workload.prompts must be a non-empty list of non-empty strings")
    if not work["seeds"]:
        raise ConfigError("workload.seeds must name at least one seed")
    if any(s < 0 for s in work["seeds"]):
        raise ConfigError(f"workload.seeds must be non-negative, got {work['seeds']}")
    frames = model.get("frames")
    if frames is not None and not 1 <= frames <= MAX_STEPS:
        raise ConfigError(f"model.frames must be at least 1 and at most {MAX_STEPS} (null for an image model), "
                          f"got {frames}")
    stride = VIDEO_FRAME_STRIDE.get(model["family"])
    if frames is not None and stride is None:
        raise ConfigError(f"model.frames is for video models ({', '.join(VIDEO_FRAME_STRIDE)}); model "
                          f"'{model['name']}' ({model['family']}) makes images: leave it null")
    if frames is not None and frames % stride != 1 % stride:
        raise ConfigError(f"model.frames={frames}: a {model['family']} video has {stride}k + 1 frames (its VAE "
                          f"compresses time {stride}x), e.g. {frames - frames % stride + 1}")
    owned = sorted(set(model.get("call") or {}) & HARNESS_CALL_ARGUMENTS)
    if owned:
        raise ConfigError(f"model.call may not set {', '.join(owned)}: the harness sets them from the workload and "
                          f"the model config (workload.height/width/steps, model.guidance_scale, model.frames, ...)")
    if work["warmup"] < 0 or work["repeats"] < 1:
        raise ConfigError(f"workload.warmup must be >= 0 and workload.repeats >= 1 "
                          f"(got {work['warmup']}, {work['repeats']})")


#: Video families -> their frame stride: a video has stride * k + 1 frames.
VIDEO_FRAME_STRIDE = {"wan": 4}
#: Pipeline-call arguments the harness sets itself; `model.call` may not override them.
HARNESS_CALL_ARGUMENTS = frozenset({
    "prompt", "height", "width", "num_inference_steps", "output_type", "generator", "guidance_scale",
    "max_sequence_length", "num_frames", "image", "num_images_per_prompt", "return_dict", "callback_on_step_end",
    "callback_on_step_end_tensor_inputs", "latents"})


def _check_run(run: dict) -> None:
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


DEVICE = re.compile(r"cuda(?::(\d+))?")


def check_device(requested: str) -> None:
    """The device exists on this machine (counted through NVML: no CUDA context is created)."""
    if requested in ("auto", "cpu"):
        return
    match = DEVICE.fullmatch(str(requested))
    if match is None:
        raise ConfigError(f"run.device must be auto, cpu, cuda or cuda:N, not {requested!r}")
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError(f"run.device={requested}: no CUDA GPU is visible on this machine; "
                          "use run.device=auto or cpu")
    index = int(match.group(1) or 0)
    if index >= count:
        raise ConfigError(f"run.device={requested}: this machine has {count} visible CUDA GPU(s): "
                          f"{', '.join(f'cuda:{i}' for i in range(count))}")


_checked_stores: set[str] = set()


def check_store(location: str) -> None:
    """The store can be written: a PostgreSQL URL answers (one attempt, a short timeout); an SQLite path
    is an SQLite database in a writable folder, or can be created there. Nothing is created."""
    if location in _checked_stores:
        return
    from harness.store import is_postgres_url, redact

    if is_postgres_url(location):
        try:
            import psycopg
        except ImportError:
            raise ConfigError("run.store is a postgresql:// URL but psycopg is not installed: "
                              "pip install 'psycopg[binary]>=3.1'") from None
        try:
            psycopg.connect(location, connect_timeout=5).close()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is an unreachable store
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"run.store: cannot reach PostgreSQL at {redact(location)}: {first}") from None
    else:
        path = Path(location)
        if path.exists():
            if not path.is_file():
                raise ConfigError(f"run.store={location!r} is not a file: give an SQLite file path or a "
                                  "postgresql:// URL")
            _check_sqlite(path)
            if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
                raise ConfigError(f"run.store={location!r} is not writable (the file and its folder must be)")
        else:
            check_writable_dir("run.store's folder", str(path.parent))
    _checked_stores.add(location)


def _check_sqlite(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise sqlite3.DatabaseError("file is not a database")
        if head:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
            finally:
                db.close()
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(f"run.store={str(path)!r} is not an SQLite result store ({exc}): give another "
                          "path or a postgresql:// URL") from None


def check_writable_dir(what: str, folder: str) -> None:
    """``folder`` is (or, creating what is missing, can become) a writable directory."""
    path = Path(folder).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder!r} cannot be created: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder!r} is not writable ({probe} is read-only for this user)")
