"""The result record: what ``result.json`` and one store row hold, and the only place one is assembled.

Every key is a dataclass field whose ``metadata["doc"]`` is its one-line meaning; README's schema table is
generated from these (`schema_markdown`, kept in step by a test) and reports read records through
`Record.from_dict`, so a key is declared once. Records are plain JSON: `Record.to_dict` is what is written.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Optional

SCHEMA_VERSION = 1


def doc(text: str, default: Any = None, **kw) -> Any:
    """A field with its one-line documentation (and a default: None unless given)."""
    if isinstance(default, (dict, list)):
        factory = (lambda d=default: type(d)(d))
        return field(default_factory=factory, metadata={"doc": text, **kw})
    return field(default=default, metadata={"doc": text, **kw})


@dataclass
class ErrorInfo:
    """Why a cell did not end ``ok``."""

    type: str = doc("exception type, signal name, or Timeout / ProcessExit")
    message: str = doc("first line of the message")
    normalized: str = doc("the message with numbers, paths and addresses replaced, for grouping identical errors")
    stage: Optional[str] = doc("where the cell was when it failed (`load + quantize`, `offload`, `compile`, "
                               "`first call (1 of 3), step 2 of 4 done`, ...)")
    reason: Optional[str] = doc("the engine's or mode's declared reason (status `unsupported`)")
    traceback: Optional[str] = doc("the end of the traceback, for exceptions")


@dataclass
class Workload:
    name: str = doc("workload config name")
    steps: int = doc("denoising steps per image")
    height: int = doc("image height, pixels")
    width: int = doc("image width, pixels")
    warmup: int = doc("untimed generations before the timed ones")
    repeats: int = doc("timed repetitions of the prompt x seed set")
    n_prompts: int = doc("number of prompts")
    n_seeds: int = doc("number of seeds per prompt")


@dataclass
class Metrics:
    load_s: Optional[float] = doc("wall time from nothing to a ready pipeline on the device, quantization "
                                  "and offload set-up included (= read_s + quantize_s + move_s + offload_s)")
    read_s: Optional[float] = doc("reading the checkpoint (pre-mode quantization included)")
    quantize_s: Optional[float] = doc("post-mode quantization")
    move_s: Optional[float] = doc("moving the pipeline onto the device")
    offload_s: Optional[float] = doc("installing the offload mode (balanced: planning, pinning host copies)")
    first_call_s: Optional[float] = doc("the first warm-up call, where compile and autotune land")
    steps_per_s: Optional[float] = doc("denoising steps/s: median of synchronized per-step intervals after warm-up")
    step_s: Optional[float] = doc("median seconds per denoising step (the inverse of steps_per_s)")
    s_per_image: Optional[float] = doc("median end-to-end seconds per image (per video for video models): text "
                                       "encoding + denoising + VAE decode")
    mem_after_load_gib: Optional[float] = doc("`torch.cuda.memory_allocated()` after load (host RSS on CPU, "
                                              "see memory_kind)")
    reserved_after_load_gib: Optional[float] = doc("`torch.cuda.max_memory_reserved()` after load")
    peak_mem_gib: Optional[float] = doc("`max_memory_allocated()` during generation, reset after warm-up")
    peak_reserved_gib: Optional[float] = doc("`max_memory_reserved()` during generation, reset after warm-up")
    host_peak_rss_gib: Optional[float] = doc("peak resident host memory of the cell process during load")
    weight_gib: Optional[float] = doc("stored bytes of the quantized components (packed data + scales, tensor "
                                      "subclasses unflattened)")
    reference_weight_gib: Optional[float] = doc("the same components as stored in the checkpoint")
    total_weight_gib: Optional[float] = doc("stored bytes of the whole pipeline after quantization")
    memory_kind: Optional[str] = doc("`cuda` (GPU allocator figures) or `host_rss`")
    n_timed_calls: Optional[int] = doc("timed generations (prompts x seeds x repeats)")
    n_step_samples: Optional[int] = doc("per-step intervals behind steps_per_s")
    spread: dict = doc("run-to-run spread over the timed calls, with workload.repeats >= 3 (else empty): "
                       "`steps_per_s` and `s_per_image`, each `{n, min, q1, median, q3, max, iqr}` of every "
                       "timed call's own figure (a call's steps/s: the inverse of its median step interval)",
                       default={})
    harness_overhead_s: Optional[float] = doc("the cell's wall time spent outside loading and generating, up "
                                              "to the record's assembly (the store write is not in it)")
    overhead: dict = doc("harness_overhead_s in parts, seconds: `parent_s` (resume check, claim, reference "
                         "look-up, and the imports the cell's process inherits: `imports_s`, paid by the first "
                         "cell of a process that needs them), `reap_s` (the previous cell's process finishing its exit), `start_s` (fork to "
                         "the cell's first stage), `setup_s` (CUDA context, GPU cap, environment capture: "
                         "`env_s`), `compare_s` (writing PNGs: `images_s`; metrics vs BF16: `quality_s`), "
                         "`other_s` (the rest: stage time beyond load_s, first_call_s and the timed calls)",
                         default={})
    stages_s: dict = doc("seconds the cell spent in each stage it reported (`set-up`, `load + quantize`, "
                         "`offload`, `compile`, each call, `compare`), as its parent saw them", default={})


@dataclass
class Quality:
    psnr_db: Optional[float] = doc("PSNR vs the BF16 image of the same prompt/seed/steps/resolution, per image "
                                   "on [0,1], averaged")
    ssim: Optional[float] = doc("SSIM (torchmetrics, full resolution)")
    ms_ssim: Optional[float] = doc("MS-SSIM (torchmetrics; needs sides of at least 161 px)")
    lpips: Optional[float] = doc("LPIPS (AlexNet, v0.1), only when its weights are on disk")
    clip_score: Optional[float] = doc("CLIP score, only when the CLIP model is on disk")
    unavailable: dict = doc("`{metric: reason}` for every metric that is null", default={})
    reference: Optional[str] = doc("key of the BF16 reference images compared with")
    synthetic_weights: Optional[bool] = doc("true for synthetic checkpoints: quality then means numerical deviation")
    note: Optional[str] = doc("how to read the quality columns of this record")
    floor: Optional[dict] = doc("the noise floor of this cell's compile / offload settings (null for eager, "
                                "non-streaming cells and cells with a LoRA): the same metrics (`psnr_db`, `ssim`, "
                                "`ms_ssim`, `lpips`, `clip_score`, `unavailable`) of BF16 under those settings "
                                "against the eager BF16 reference, the floor cell's `cell_key` and `status`; a "
                                "deviation within it is no larger than compile / offload alone cause")


@dataclass
class LoraReport:
    """What a cell with a LoRA did with it and what the LoRA cost (the cell's metrics and quality are those
    with the LoRA; these keys add the same cell without it)."""

    how: Optional[str] = doc("`adapter` (kept beside each layer), `fused` (fused into the compute-dtype weights) "
                             "or `fused-requantized` (fused into the dequantized weights, quantized again)")
    what: Optional[str] = doc("what happened to the LoRA and the quantized layers, in words")
    adapters: list = doc("the adapters loaded (one per file; `synthetic`)", default=[])
    adapter_weights: list = doc("their weights (diffusers set_adapters)", default=[])
    lora_layers: Optional[int] = doc("denoiser layers the LoRA adapts (every one checked to be adapted)")
    on_quantized_layers: Optional[int] = doc("of those, layers whose base layer holds quantized weights")
    lora_params: Optional[int] = doc("parameters of the LoRA")
    load_s: Optional[float] = doc("loading (and fusing) the LoRA into the ready pipeline, seconds")
    mem_with_lora_gib: Optional[float] = doc("memory after loading the LoRA (as `metrics.mem_after_load_gib`)")
    steps_per_s_without: Optional[float] = doc("steps/s of the same cell before the LoRA was loaded")
    s_per_image_without: Optional[float] = doc("s/image of the same cell before the LoRA was loaded")
    first_call_s_without: Optional[float] = doc("first call of the same cell before the LoRA was loaded, seconds")
    peak_mem_gib_without: Optional[float] = doc("peak memory of the same cell before the LoRA was loaded")
    speed_ratio: Optional[float] = doc("steps/s with the LoRA / without it (below 1: the LoRA slows the cell)")
    retention_cosine: Optional[float] = doc("cosine of the LoRA's effect on the images, quantized vs BF16: "
                                            "cos((quantized+LoRA) - quantized, (BF16+LoRA) - BF16); 1 = kept")
    retention_psnr_db: Optional[float] = doc("PSNR of the quantized LoRA effect against the BF16 one (images on [0,1])")
    retention_magnitude: Optional[float] = doc("|quantized effect| / |BF16 effect|: below 1 the LoRA acts weaker")
    bf16_delta_rms: Optional[float] = doc("RMS of the LoRA's effect on the BF16 images (on [0,1]): its size")
    unload_exact: Optional[bool] = doc("unloading restored the denoiser bit for bit (null: not checked, see "
                                       "`unavailable`)")
    unload_difference: list = doc("what differed after unloading, when `unload_exact` is false", default=[])
    reference: Optional[str] = doc("key of the LoRA reference (BF16 and BF16 + LoRA images)")
    files: list = doc("`lora=file`: each file's path, sha256, key format, layers and rank", default=[])
    unavailable: dict = doc("`{figure: reason}` for every figure that is null", default={})
    note: Optional[str] = doc("how to read the retention figures of this record")


@dataclass
class Record:
    schema_version: int = doc("version of this schema", default=SCHEMA_VERSION)
    cell_key: str = doc("resume key: the config that shapes the run, library versions, hardware")
    created: str = doc("when the record was assembled (local time, ISO 8601)")
    status: str = doc("`ok`, `unsupported` (declared by the engine/mode), `error`, `oom`, `timeout`, `crashed`")
    error: Optional[ErrorInfo] = doc("null, or why the cell did not end ok (see `error.*`)")
    model: str = doc("model config name")
    engine: str = doc("quantization engine")
    dtype: str = doc("weight type, in the engine's vocabulary")
    mode: str = doc("`pre` (quantized while loading) or `post` (after loading)")
    components: list = doc("the quantized pipeline components", default=[])
    offload: str = doc("offload mode")
    compile: str = doc("compile mode")
    lora: str = doc("LoRA: `none`, `file` or `synthetic` (its options: `config.lora`)", default="none")
    workload: Optional[Workload] = doc("what was generated (see `workload.*`)")
    metrics: Metrics = doc("what was measured (see `metrics.*`)", default=None)
    quality: Quality = doc("comparison with BF16 (see `quality.*`)", default=None)
    engine_report: Optional[dict] = doc("engine, dtype, mode, resolved settings, backend versions, per component: "
                                        "stored and quantized GiB, quantized/target module counts; "
                                        "`vae_compute_dtype` when the VAE computed in float32 on a CPU without BF16 "
                                        "convolutions (`harness.cpu_vae`)")
    lora_report: Optional[LoraReport] = doc("what a cell with a LoRA did with it (see `lora_report.*`)")
    offload_report: Optional[dict] = doc("what the offload step did (placement, moves, GiB moved)")
    compile_report: Optional[dict] = doc("what the compile step did")
    env: Optional[dict] = doc("device and its name, CPU, Python, CUDA, driver, every library version, "
                              "harness git sha, GPU cap; `compile_cache`: torch.compile's cache folder and "
                              "the files it held as the cell started (0: first-call figures from an empty "
                              "cache)")
    config: Optional[dict] = doc("the full resolved config")
    run_dir: Optional[str] = doc("the cell's run directory (result.json, images)")
    images: list = doc("saved PNGs", default=[])
    wall_s: Optional[float] = doc("wall time of the isolated cell process")

    def __post_init__(self):
        if self.metrics is None:
            self.metrics = Metrics()
        if self.quality is None:
            self.quality = Quality()

    def to_dict(self) -> dict:
        """Plain JSON data (NaN and infinities become null)."""
        return clean(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "Record":
        """A record read back from result.json or the store. Keys this schema does not know are dropped,
        missing ones take their defaults, so records of older runs read the same way."""
        return _build(cls, data)

    @classmethod
    def assemble(cls, spec, cell_key: str, outcome: dict, run_dir: str, parent_env: dict) -> "Record":
        """The record of one isolated cell run: ``outcome`` is `harness.isolate.in_child`'s answer,
        whose payload (when the child got that far) carries metrics, quality and the step reports."""
        payload = outcome.get("payload") or {}
        quality = _build(Quality, payload.get("quality") or {})
        if outcome["status"] != "ok":
            quality.unavailable = {"all": f"run ended with status {outcome['status']}"}
        work = spec.workload
        return cls(
            cell_key=cell_key,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            status=outcome["status"],
            error=_build(ErrorInfo, outcome["error"]) if outcome.get("error") else None,
            model=spec.model["name"], engine=spec.engine, dtype=spec.dtype, mode=spec.mode,
            components=list(spec.components), offload=spec.offload["name"], compile=spec.compile["name"],
            lora=spec.lora.get("name", "none"),
            lora_report=_build(LoraReport, payload["lora_report"]) if payload.get("lora_report") else None,
            workload=Workload(name=work["name"], steps=work["steps"], height=work["height"], width=work["width"],
                              warmup=work["warmup"], repeats=work["repeats"], n_prompts=len(work["prompts"]),
                              n_seeds=len(work["seeds"])),
            metrics=_build(Metrics, payload.get("metrics") or {}),
            quality=quality,
            engine_report=payload.get("engine_report"),
            offload_report=payload.get("offload_report"),
            compile_report=payload.get("compile_report"),
            env=payload.get("env") or parent_env,
            config=spec.config,
            run_dir=run_dir,
            images=list(payload.get("images") or []),
            wall_s=outcome.get("wall_s"),
        )


def _build(cls, data: dict):
    """``cls`` from a dict, recursing into nested record dataclasses; unknown keys are dropped."""
    if isinstance(data, cls):
        return data
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        nested = _NESTED.get((cls, f.name))
        if nested is not None and isinstance(value, dict):
            value = _build(nested, value)
        kwargs[f.name] = value
    return cls(**kwargs)


_NESTED = {(Record, "error"): ErrorInfo, (Record, "workload"): Workload, (Record, "metrics"): Metrics,
           (Record, "lora_report"): LoraReport,
           (Record, "quality"): Quality}

#: The quality figures compared with BF16 (the numeric fields of `Quality`).
QUALITY_KEYS = ("psnr_db", "ssim", "ms_ssim", "lpips", "clip_score")


def clean(value):
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def schema_rows() -> list[tuple[str, str]]:
    """(key, meaning) for every key of a record, nested ones as ``metrics.load_s``."""
    rows = []
    for f in fields(Record):
        rows.append((f.name, f.metadata["doc"]))
        nested = _NESTED.get((Record, f.name))
        if nested is not None:
            rows += [(f"{f.name}.{g.name}", g.metadata["doc"]) for g in fields(nested)]
    return rows


def schema_markdown() -> str:
    """README's record table."""
    lines = ["| key | meaning |", "|---|---|"]
    lines += [f"| `{key}` | {meaning} |" for key, meaning in schema_rows()]
    return "\n".join(lines)
