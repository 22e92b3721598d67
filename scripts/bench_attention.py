"""One FLUX.1-dev attention call (1 x 24 heads x 4608 tokens x 128), side by side in one process: SDPA in
BF16 (the backend torch picks) and SDNQ's quantized attention (``int8``, ``int8-fp8``), eager and compiled
(``dynamic=False``), with the quantization of Q / K / V included; relative error against fp32 SDPA.

    python scripts/bench_attention.py [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from engines.sdnq import attention


def timed(fn, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--tokens", type=int, default=4608)
    args = p.parse_args(argv)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 24, args.tokens, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    rows = {"sdpa bf16": lambda: F.scaled_dot_product_attention(q, k, v)}
    for mode, fp8 in attention.MODES.items():
        rows[f"sdnq {mode}"] = lambda fp8=fp8: attention.attention(q, k, v, pv_fp8=fp8)
        compiled = torch.compile(lambda a, b, c, fp8=fp8: attention.attention(a, b, c, pv_fp8=fp8), dynamic=False)
        rows[f"sdnq {mode} compiled"] = lambda c=compiled: c(q, k, v)
    results = []
    flops = 4 * 24 * args.tokens ** 2 * 128
    for name, fn in rows.items():
        t = time.perf_counter()
        with torch.no_grad():
            out = fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t
        times = timed(fn, args.iters)
        med = statistics.median(times)
        row = {"config": name, "ms": med * 1e3, "ms_min": min(times) * 1e3, "ms_max": max(times) * 1e3,
               "tflops": flops / med / 1e12, "first_call_s": first,
               "rel_err_vs_fp32": float((out.float() - ref).norm() / ref.norm())}
        results.append(row)
        print(json.dumps(row), flush=True)
    base = results[0]["ms"]
    print(f"\n| config | ms (median) [min, max] | x SDPA | TFLOP/s | first call s | rel err vs fp32 |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['ms']:.3f} [{r['ms_min']:.3f}, {r['ms_max']:.3f}] | {r['ms'] / base:.3f} | "
              f"{r['tflops']:.0f} | {r['first_call_s']:.1f} | {r['rel_err_vs_fp32']:.4f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
