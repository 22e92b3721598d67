"""The tiny model families the tests run, and the cells the family sweep runs on each."""

#: Tiny variant of each family added beside FLUX.1 / SDXL: model config name -> its pipeline class.
FAMILIES = {
    "qwen-image-tiny": "QwenImagePipeline",
    "flux2-dev-tiny": "Flux2Pipeline",
    "wan22-ti2v-5b-tiny": "WanPipeline",
    "sd35-large-tiny": "StableDiffusion3Pipeline",
    "flux-kontext-tiny": "FluxKontextPipeline",
    "chroma-tiny": "ChromaPipeline",
    "z-image-turbo-tiny": "ZImagePipeline",
}
#: Full-size configs: model config name -> its tiny variant.
FULL_SIZE = {
    "qwen-image": "qwen-image-tiny", "flux2-dev": "flux2-dev-tiny", "wan22-ti2v-5b": "wan22-ti2v-5b-tiny",
    "sd35-large": "sd35-large-tiny", "flux-kontext": "flux-kontext-tiny", "chroma": "chroma-tiny",
    "z-image-turbo": "z-image-turbo-tiny",
}
#: (cell id, overrides) run on every family: the reference, one engine of each kind (the text encoder too,
#: for sdnq: text encoders of every transformers class), an offload mode (unsupported on a CPU).
ENGINE_CELLS = {
    "bf16": ["engine=bf16"],
    "sdnq-int8": ["engine=sdnq", "dtype=int8", "engine.components=[denoiser,text_encoder]"],
    "torchao-int8": ["engine=torchao", "dtype=int8"],
    "quanto-int8": ["engine=quanto", "dtype=int8"],
    "gguf-q8_0": ["engine=gguf", "dtype=q8_0"],
    "bnb-nf4": ["engine=bnb", "dtype=nf4"],
    "balanced": ["engine=bf16", "offload=balanced"],
}
#: Regional compile costs ~30 s of inductor per family on a CPU: one family compiles end to end; SD3's
#: transformer declares no repeated blocks (unsupported); the other families' declarations are checked
#: in-process (test_families.py).
COMPILE_CELLS = {("qwen-image-tiny", "regional"): ["engine=bf16", "compile=regional"],
                 ("sd35-large-tiny", "regional"): ["engine=bf16", "compile=regional"]}
#: Workload of every sweep cell: 64x64 (MS-SSIM needs more and is off), 2 steps.
WORKLOAD = ["workload.height=64", "workload.width=64", "workload.steps=2", "metrics.save_images=false",
            "metrics.lpips=false", "metrics.clip=false", "metrics.ms_ssim=false", "run.device=cpu",
            "run.timeout_s=300"]


#: Cells a library cannot run on a CPU today: (model, cell id) -> why. optimum-quanto's CPU int8 matmul
#: (torch._weight_int8pack_mm) refuses a non-contiguous activation, and FLUX.2 feeds its x_embedder a
#: permuted latent; its CUDA path differs. FLUX.2's quanto cell here is int4, and the int8 cell is kept to
#: notice when the library accepts it.
CPU_LIMITS = {("flux2-dev-tiny", "quanto-int8"): "_weight_int8pack_mm_cpu : A must be contiguous"}
EXTRA_CELLS = {("flux2-dev-tiny", "quanto-int4"): ["engine=quanto", "dtype=int4"]}


def cells() -> dict[tuple[str, str], list[str]]:
    """(model, cell id) -> overrides, for every cell of the sweep."""
    out = {(model, cid): [f"model={model}", *o] for model in FAMILIES for cid, o in ENGINE_CELLS.items()}
    out.update({key: [f"model={key[0]}", *o] for key, o in EXTRA_CELLS.items()})
    out.update({key: [f"model={key[0]}", *o] for key, o in COMPILE_CELLS.items()})
    return out
