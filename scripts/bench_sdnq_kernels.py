"""Microbenchmark of SDNQ's Triton kernels on FLUX.1-dev's layer shapes (GPU): how close each launch
configuration gets to the card's memory bandwidth, to choose the constants in `triton_dequant` and
`triton_matvec`.

    python scripts/bench_sdnq_kernels.py --out results/bench_sdnq_kernels.json

* dequantization (codes -> BF16 weight) of the big linears, per (tile, warps): GB/s moved (codes + scales
  read, BF16 written) and ms;
* one-row linears (FLUX's modulation layers, x of one row): the few-row kernel per (BLOCK_N, CHUNK, warps),
  against BF16 ``F.linear`` and against dequantize + ``F.linear``.
Times are `triton.testing.do_bench` medians (ms), which flushes the L2 cache between calls.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from engines.sdnq import triton_dequant, triton_matvec
from engines.sdnq.quantize import quantize_weight

#: (rows, K) of FLUX.1-dev's linears: attention 3072x3072, MLP up / down, single-block out, modulation.
BIG = [(3072, 3072), (12288, 3072), (3072, 12288), (3072, 15360)]
MODULATION = [(18432, 3072), (9216, 3072), (6144, 3072)]
WTYPES = ["int8", "uint4", "float8_e4m3fn"]


def _bench(fn) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _weight(rows: int, k: int, wtype: str):
    w = (torch.randn(rows, k, device="cuda") * 0.02).bfloat16()
    return quantize_weight(w, wtype, 0)


def bench_dequant(rows, k, wtype, tiles, warps) -> list[dict]:
    import triton

    from engines.sdnq.triton_kernels import dequant_kernel

    qw = _weight(rows, k, wtype)
    mode, qmin = triton_dequant.kernel_args(wtype)
    out = torch.empty(rows, k, dtype=torch.bfloat16, device="cuda")
    moved = _nbytes(qw.data, qw.scale, qw.zero_point, out)
    width = triton_dequant._pow2(qw.group_size)
    rows_out = []
    for tile, nw in itertools.product(tiles, warps):
        if width > tile:
            continue
        block_g = max(1, tile // width)
        grid = (triton.cdiv(qw.scale.numel(), block_g),)
        zero = qw.zero_point if qw.zero_point is not None else qw.scale

        def run():
            dequant_kernel[grid](qw.data, qw.scale, zero, out, qw.scale.numel(), QMIN=qmin, GROUP=qw.group_size,
                                 GROUP_P2=width, BLOCK_G=block_g, MODE=mode, HAS_ZERO=qw.zero_point is not None,
                                 num_warps=nw)
        ms = _bench(run)
        rows_out.append({"kernel": "dequant", "shape": [rows, k], "wtype": wtype, "group": qw.group_size,
                         "tile": tile, "warps": nw, "ms": ms, "gb_per_s": moved / ms / 1e6})
    return rows_out


def bench_matvec(rows, k, wtype, block_ns, chunks, warps) -> list[dict]:
    qw = _weight(rows, k, wtype)
    x = torch.randn(1, k, device="cuda").bfloat16()
    bias = torch.randn(rows, device="cuda").bfloat16()
    w16 = qw.dequantize(torch.bfloat16).reshape(rows, k)
    base = {"shape": [rows, k], "wtype": wtype, "group": qw.group_size}
    out = [{"kernel": "bf16 F.linear", **base, "ms": _bench(lambda: F.linear(x, w16, bias)),
            "bytes": _nbytes(w16)},
           {"kernel": "dequant + F.linear", **base,
            "ms": _bench(lambda: F.linear(x, triton_dequant.dequantize(qw.data, qw.scale, qw.zero_point, wtype,
                                                                       qw.group_size, torch.bfloat16), bias))}]
    saved = (triton_matvec.BLOCK_N, triton_matvec.CHUNK, triton_matvec.NUM_WARPS)
    code_bytes = _nbytes(qw.data, qw.scale, qw.zero_point)
    try:
        for bn, chunk, nw in itertools.product(block_ns, chunks, warps):
            triton_matvec.BLOCK_N, triton_matvec.CHUNK, triton_matvec.NUM_WARPS = bn, chunk, nw
            ms = _bench(lambda: triton_matvec.linear(x, qw.data, qw.scale, qw.zero_point, bias, wtype, qw.group_size))
            out.append({"kernel": "few-row", **base, "block_n": bn, "chunk": chunk, "warps": nw, "ms": ms,
                        "gb_per_s": code_bytes / ms / 1e6})
    finally:
        triton_matvec.BLOCK_N, triton_matvec.CHUNK, triton_matvec.NUM_WARPS = saved
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--tiles", default="2048,4096,8192,16384")
    p.add_argument("--warps", default="4,8")
    p.add_argument("--block-n", default="4,8,16,32")
    p.add_argument("--chunks", default="512,1024,2048")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    rows = []
    for wtype in WTYPES:
        if not triton_dequant.supports(wtype, 1024, torch.device("cuda")):
            continue
        for shape in BIG:
            rows += bench_dequant(*shape, wtype, ints(args.tiles), ints(args.warps))
        for shape in MODULATION:
            rows += bench_matvec(*shape, wtype, ints(args.block_n), ints(args.chunks), ints(args.warps))
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    print(summary(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


def summary(result: dict) -> str:
    """Per kernel and weight type: the configuration with the best total time over the shapes, and the
    current default's total."""
    lines = [f"{result['device']} (torch {result['torch']})"]
    groups: dict = {}
    for r in result["rows"]:
        key = (r["kernel"], r["wtype"], tuple((k, r[k]) for k in ("tile", "block_n", "chunk", "warps") if k in r))
        groups.setdefault(key, []).append(r["ms"])
    best: dict = {}
    for (kernel, wtype, conf), times in groups.items():
        total = sum(times)
        lines.append(f"{kernel:20s} {wtype:14s} {dict(conf)} total {total:.3f} ms over {len(times)} shapes")
        if (kernel, wtype) not in best or total < best[(kernel, wtype)][1]:
            best[(kernel, wtype)] = (dict(conf), total)
    lines.append("best:")
    lines += [f"  {k[0]} {k[1]}: {v[0]} {v[1]:.3f} ms" for k, v in best.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
