"""The quantized-diffusion benchmark harness.

The path of one run, one module each: compose (`compose`, `schema`) -> validate (`validate`) -> isolate
(`isolate`, with the parent's warm imports in `prefork`) -> load + quantize (`load`, `synthetic`,
`checkpoint`) -> offload (`offload`) -> compile (`compilation`, `cudagraph`) -> warm up + generate +
measure (`generate`, `measure`) -> LoRA (`lora`) -> compare with BF16 (`reference`, `floor`, `quality`) ->
store (`record`, `persist`, `store`) -> report (the `reports` package). `runner` strings them together in
the parent; `cell` is what runs in the cell's own process.
"""
import os as _os

# torch.cuda.is_available() through NVML in every process of the harness: asked through the CUDA runtime
# (torch's default), it initialises the driver, and no cell forked after that could use CUDA.
_os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
# Libraries' import-time notices (e.g. diffusers on optional backends) would break the live progress
# display; a cell sets its libraries' verbosity itself.
for _var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
    _os.environ.setdefault(_var, "error")
