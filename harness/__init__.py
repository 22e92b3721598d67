"""The quantized-diffusion benchmark harness.

The path of one run, one module each: compose (`config`) -> validate (`validate`) -> isolate
(`isolate`) -> load + quantize (`load`) -> offload (`offload`) -> compile (`compile`) -> warm up +
generate + measure (`generate`, `measure`) -> compare with BF16 (`reference`, `quality`) -> store
(`result`, `store`) -> report (the `reports` package). `runner` strings them together.
"""
