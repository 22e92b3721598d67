"""The quantized-diffusion benchmark harness.

The path of one run, one module each: compose (`config`) -> validate (`validate`) -> isolate
(`isolate`) -> load + quantize (`load`) -> offload (`offload`) -> compile (`compile`) -> warm up +
generate + measure (`generate`, `measure`) -> compare with BF16 (`reference`, `quality`) -> store
(`result`, `store`) -> report (the `reports` package). `runner` strings them together.
"""
import os as _os

# torch.cuda.is_available() through NVML in every process of the harness: asked through the CUDA runtime
# (torch's default), it initialises the driver, and no cell forked after that could use CUDA.
_os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
# Libraries' import-time notices (e.g. diffusers on optional backends) would break the live progress
# display; a cell sets its libraries' verbosity itself.
for _var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
    _os.environ.setdefault(_var, "error")
