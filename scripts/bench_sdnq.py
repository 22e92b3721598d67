"""Benchmark SDNQ on one transformer forward of a synthetic FLUX.1-dev (1024x1024: 4096 image +
512 text tokens), side by side in one process against BF16 (eager, whole and regional compile, CUDA
graph), torchao (int8 weight-only, float8 dynamic with whole and regional compile) and the public
``sdnq`` package (int8 with and without its quantized matmul, uint4), each row's first call from an
empty inductor / Triton cache. Run on a GPU; ``--tiny`` runs a miniature on CPU.

    python scripts/bench_sdnq.py --out results/bench_sdnq.json
    python scripts/bench_sdnq.py --tiny --out /tmp/bench.json          # CPU smoke test

Per configuration: weights GiB on the device, peak extra memory while quantizing, first-call
seconds (compile / autotune included), steady-state median seconds per forward and the relative
error of the output vs BF16. Also: pre-mode (streamed) quantization peak vs final size.
Random weights are N(0, 0.5/sqrt(fan_in)) so activations stay tame.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import time

import torch

from engines.base import module_nbytes

FULL = dict(guidance_embeds=True)  # FluxTransformer2DModel defaults are FLUX.1-dev
TINY = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=32,
            num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
            axes_dims_rope=(8, 12, 12), guidance_embeds=True)

CONFIGS = {
    "bf16 eager": dict(kind="bf16"),
    "bf16 compiled": dict(kind="bf16", compile=True),
    "sdnq int8": dict(kind="sdnq", dtype="int8"),
    "sdnq uint4": dict(kind="sdnq", dtype="uint4"),
    "sdnq int8 (no few-row kernel)": dict(kind="sdnq", dtype="int8", few_rows=False),
    "sdnq uint4 (no few-row kernel)": dict(kind="sdnq", dtype="uint4", few_rows=False),
    "sdnq float8_e4m3fn": dict(kind="sdnq", dtype="float8_e4m3fn"),
    "sdnq int8 compiled": dict(kind="sdnq", dtype="int8", compile=True),
    "sdnq int8 + qmm (compiled)": dict(kind="sdnq", dtype="int8", qmm=True, compile=True),
    "sdnq float8_e4m3fn + qmm (compiled)": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True, compile=True),
    "sdnq int8 + qmm eager": dict(kind="sdnq", dtype="int8", qmm=True),
    "bf16 regional": dict(kind="bf16", compile="regional"),
    "sdnq int8 regional": dict(kind="sdnq", dtype="int8", compile="regional"),
    "sdnq int8 + qmm (regional)": dict(kind="sdnq", dtype="int8", qmm=True, compile="regional"),
    "sdnq float8_e4m3fn + qmm (regional)": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True, compile="regional"),
    "torchao int8 weight-only": dict(kind="torchao", recipe="int8wo"),
    "torchao float8 dynamic (compiled)": dict(kind="torchao", recipe="float8dq", compile=True),
    "torchao float8 dynamic (regional)": dict(kind="torchao", recipe="float8dq", compile="regional"),
    "torchao float8 dynamic (regional) + cudagraph": dict(kind="torchao", recipe="float8dq", compile="regional",
                                                          graph=True),
    "public sdnq int8": dict(kind="public", dtype="int8"),
    "public sdnq int8 + qmm": dict(kind="public", dtype="int8", qmm=True),
    "public sdnq uint4": dict(kind="public", dtype="uint4"),
    "bf16 cudagraph": dict(kind="bf16", graph=True),
    "bf16 regional + cudagraph": dict(kind="bf16", compile="regional", graph=True),
    "sdnq int8 cudagraph": dict(kind="sdnq", dtype="int8", graph=True),
    "sdnq uint4 cudagraph": dict(kind="sdnq", dtype="uint4", graph=True),
    "sdnq int8 + qmm cudagraph": dict(kind="sdnq", dtype="int8", qmm=True, graph=True),
    "sdnq float8_e4m3fn + qmm cudagraph": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True, graph=True),
    "sdnq float8_e4m3fn + qmm (regional) + cudagraph": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True,
                                                            compile="regional", graph=True),
    "sdnq int8 + qmm (regional) + cudagraph": dict(kind="sdnq", dtype="int8", qmm=True, compile="regional",
                                                   graph=True),
    "sdnq float8_e4m3fn + qmm (regional) exact accumulation": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True,
                                                                    compile="regional", fast_accum=False),
    "sdnq int8 fused qkv": dict(kind="sdnq", dtype="int8", fuse=True),
    "sdnq uint4 fused qkv": dict(kind="sdnq", dtype="uint4", fuse=True),
    "sdnq float8_e4m3fn + qmm + fused qkv (regional)": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True, fuse=True,
                                                            compile="regional"),
    "sdnq float8_e4m3fn + qmm + fused qkv (regional) + cudagraph": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True,
                                                                        fuse=True, compile="regional", graph=True),
    "sdnq float8_e4m3fn + qmm + fused qkv (compiled)": dict(kind="sdnq", dtype="float8_e4m3fn", qmm=True, fuse=True,
                                                            compile=True),
    "sdnq float8_e4m3fn + qmm + fused qkv + int8 attention (regional) + cudagraph": dict(
        kind="sdnq", dtype="float8_e4m3fn", qmm=True, fuse=True, attention="int8", compile="regional", graph=True),
    "sdnq float8_e4m3fn + qmm + fused qkv + int8-fp8 attention (regional) + cudagraph": dict(
        kind="sdnq", dtype="float8_e4m3fn", qmm=True, fuse=True, attention="int8-fp8", compile="regional",
        graph=True),
    "sdnq int8 + qmm + fused qkv (regional)": dict(kind="sdnq", dtype="int8", qmm=True, fuse=True,
                                                   compile="regional"),
    "sdnq int8 + qmm + fused qkv (regional) + cudagraph": dict(kind="sdnq", dtype="int8", qmm=True, fuse=True,
                                                               compile="regional", graph=True),
}
#: torch.compile's ``dynamic`` for every compiled row: static shapes, as the harness compiles (a recompile
#: must not turn a row's graphs dynamic, which would make the rows' kernels differ in kind).
DYNAMIC = False
#: The peers SDNQ is compared with (the best of them is each row's second ratio).
PEERS = ("torchao", "public")


def tame_init_(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(_tame(name, p.shape, p.dtype, p.device, g))


def _tame(name, shape, dtype, device, g):
    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        return (torch.randn(shape, device=device, generator=g) * (0.5 / fan_in ** 0.5)).to(dtype)
    if name.endswith("bias"):
        return (torch.randn(shape, device=device, generator=g) * 0.02).to(dtype)
    return torch.ones(shape, device=device, dtype=dtype)  # norm scales


def build(cfg: dict, device: str):
    from diffusers import FluxTransformer2DModel
    with torch.device(device):
        model = FluxTransformer2DModel(**cfg).to(torch.bfloat16)
    tame_init_(model)
    return model.eval()


def inputs(cfg: dict, device: str, tiny: bool) -> dict:
    h = w = 8 if tiny else 64  # 1024 px / 8 (VAE) / 2 (patch) = 64
    txt = 16 if tiny else 512
    g = torch.Generator(device=device).manual_seed(1)
    ids = torch.zeros(h * w, 3, device=device)
    ids[:, 1] = torch.arange(h, device=device).repeat_interleave(w)
    ids[:, 2] = torch.arange(w, device=device).repeat(h)
    c_in = cfg.get("in_channels", 64)
    return dict(hidden_states=torch.randn(1, h * w, c_in, device=device, generator=g).bfloat16(),
                encoder_hidden_states=torch.randn(1, txt, cfg.get("joint_attention_dim", 4096), device=device,
                                                  generator=g).bfloat16(),
                pooled_projections=torch.randn(1, cfg.get("pooled_projection_dim", 768), device=device,
                                               generator=g).bfloat16(),
                timestep=torch.full((1,), 0.5, device=device).bfloat16(),
                guidance=torch.full((1,), 3.5, device=device).bfloat16(),
                img_ids=ids, txt_ids=torch.zeros(txt, 3, device=device), return_dict=False)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def apply(name: str, spec: dict, base: torch.nn.Module, device: str, compile_mode: str):
    """(model, quantize seconds, peak extra bytes while quantizing)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    model = copy.deepcopy(base) if spec["kind"] != "bf16" or spec.get("compile") == "regional" else base
    t = time.perf_counter()
    if spec["kind"] == "sdnq":
        from engines.registry import get_engine_class
        options = {"use_quantized_matmul": spec.get("qmm", False), "fuse_qkv": spec.get("fuse", False),
                   "fp8_fast_accum": spec.get("fast_accum", True), "quantized_attention": spec.get("attention", "none")}
        engine = get_engine_class("sdnq")(spec["dtype"], "post", options)
        engine.check_platform(torch.device(device))
        model = engine.quantize("transformer", model)
        engine.verify("transformer", model)
    elif spec["kind"] == "public":
        from sdnq import sdnq_post_load_quant
        model = sdnq_post_load_quant(model, weights_dtype=spec["dtype"], use_quantized_matmul=spec.get("qmm", False),
                                     torch_dtype=torch.bfloat16)
    elif spec["kind"] == "torchao":
        from torchao.quantization import quantize_
        if spec["recipe"] == "int8wo":
            from torchao.quantization import Int8WeightOnlyConfig as C
            quantize_(model, C())
        else:
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig as C, PerRow
            quantize_(model, C(granularity=PerRow()))
    sync(device)
    seconds = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() - before) if device == "cuda" else 0
    mode = None if compile_mode == "default" else compile_mode
    if spec.get("compile") == "regional":  # the repeated blocks only: one compile per block class
        for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
            block.compile(mode=mode, dynamic=DYNAMIC)
    elif spec.get("compile"):
        model = torch.compile(model, mode=mode, dynamic=DYNAMIC)
    if spec.get("graph"):  # the harness's compile=cudagraph: the whole forward as one CUDA graph
        from harness import cudagraph
        cudagraph.install(model)
    return model, seconds, peak


def bench_one(name, spec, base, x, ref, args):
    from engines.sdnq import triton_matvec
    rows_limit = triton_matvec.MAX_ROWS
    if spec.get("few_rows") is False:  # every SDNQ linear through dequantize + F.linear
        triton_matvec.MAX_ROWS = 0
    try:
        return _bench_one(name, spec, base, x, ref, args)
    finally:
        triton_matvec.MAX_ROWS = rows_limit


def _bench_one(name, spec, base, x, ref, args):
    if args.fresh_cache:  # the first call compiles from an empty cache, as a new user's would
        import tempfile
        fresh = tempfile.mkdtemp(prefix="inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
        os.environ["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
    model, q_s, q_peak = apply(name, spec, base, args.device, args.compile_mode)
    with torch.no_grad():
        out, first = timed(lambda: model(**x)[0], args.device)
        for _ in range(args.warmup):
            model(**x)
        times = [timed(lambda: model(**x)[0], args.device)[1] for _ in range(args.iters)]
        wanted = args.profile == "all" or name in args.profile.split(";")
        profile = _profile(model, x, args) if wanted else None
    inner = getattr(model, "_orig_mod", model)
    row = {"config": name, "s_per_step": statistics.median(times), "first_call_s": first,
           "s_per_step_min": min(times), "s_per_step_max": max(times),
           "weights_gib": module_nbytes(inner) / 2 ** 30 if spec["kind"] != "torchao" else _ao_bytes(inner) / 2 ** 30,
           "quantize_s": q_s, "quantize_peak_extra_gib": q_peak / 2 ** 30,
           "rel_err_vs_bf16": float((out.float() - ref).norm() / ref.norm())}
    if profile:
        row["profile"] = profile
        print(f"--- profile of one forward: {name}\n{profile}", flush=True)
    del model, inner, out
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return row


def _profile(model, x, args) -> str:
    """Kernel-level breakdown of one forward (torch.profiler): where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=acts) as prof:
        model(**x)
        sync(args.device)
    key = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=60)


def _ao_bytes(model):
    return module_nbytes(model)


def bench_pre_mode(cfg, device, dtype):
    """Pre mode: stream tensors made one at a time on the device into a meta model, quantizing on
    arrival; returns (final GiB, peak GiB during the load)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    from engines.sdnq.config import SDNQConfig
    from engines.sdnq.loading import stream_into
    with init_empty_weights():
        model = FluxTransformer2DModel(**cfg)
    names = [(n, p.shape) for n, p in model.named_parameters()]
    g = torch.Generator(device=device).manual_seed(0)

    def tensors():
        for n, shape in names:
            yield n, _tame(n, shape, torch.bfloat16, device, g)

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    t = time.perf_counter()
    model = stream_into(model, tensors(), SDNQConfig(dtype, quantize_device="cuda" if device == "cuda" else "cpu"),
                        torch.bfloat16, device)
    seconds = time.perf_counter() - t
    final = module_nbytes(model)
    peak = (torch.cuda.max_memory_allocated() - start) if device == "cuda" else final
    del model
    return {"dtype": dtype, "final_gib": final / 2 ** 30, "peak_gib": peak / 2 ** 30, "seconds": seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="miniature FLUX on CPU (smoke test)")
    p.add_argument("--out", help="write results as JSON here")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--configs", default="all", help="comma-separated names from: " + "; ".join(CONFIGS))
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")
    p.add_argument("--no-pre", action="store_true", help="skip the pre-mode memory measurement")
    p.add_argument("--profile", nargs="?", const="all", default="",
                   help="print a torch.profiler kernel table of one forward of every row, or of the rows named "
                        "(separated by ';')")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--warm-cache", dest="fresh_cache", action="store_false",
                   help="reuse the inductor / Triton caches between rows (default: a fresh, empty one per row)")
    p.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                   help="override an integer constant of an engines.sdnq module, e.g. triton_dequant.NUM_WARPS=8")
    p.add_argument("--inductor", action="append", default=[], metavar="NAME=VALUE",
                   help="set a torch._inductor.config value for the whole run, e.g. "
                        "triton.persistent_reductions=False (a Python literal: True, 4096, 'x')")
    args = p.parse_args(argv)
    for item in args.set:
        _set_constant(item)
    for item in args.inductor:
        _set_inductor(item)
    args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if args.device == "cpu" and not args.tiny:
        sys.exit("no CUDA device: use --tiny for the CPU smoke test")
    cfg = TINY if args.tiny else FULL
    names = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(",")]
    if args.tiny:  # keep the CPU smoke test quick: inductor on CPU compiles for minutes
        names = [n for n in names if not CONFIGS[n].get("compile")]

    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "set": args.set,
               "torch": torch.__version__, "model": "flux-tiny" if args.tiny else "FLUX.1-dev (synthetic)",
               "rows": [], "pre_mode": [], "fresh_cache": args.fresh_cache, "compile_dynamic": DYNAMIC,
               "inductor": args.inductor}
    if not args.no_pre:
        for dtype in ("int8", "uint4"):
            results["pre_mode"].append(bench_pre_mode(cfg, args.device, dtype))
            print(f"pre mode {dtype}: {results['pre_mode'][-1]}", flush=True)
    base = build(cfg, args.device)
    x = inputs(cfg, args.device, args.tiny)
    with torch.no_grad():
        ref = base(**x)[0].float()
    for name in names:
        spec = CONFIGS[name]
        package = {"torchao": "torchao", "public": "sdnq"}.get(spec["kind"])
        if package is not None:
            try:
                __import__(package)
            except ImportError:
                results["rows"].append({"config": name, "status": f"{package} not installed"})
                continue
        if spec.get("graph") and args.device != "cuda":
            results["rows"].append({"config": name, "status": "CUDA graphs need a CUDA device"})
            continue
        try:
            row = bench_one(name, spec, base, x, ref, args)
            row["status"] = "ok"
        except Exception as err:  # a failing config is a result, not the end of the run
            row = {"config": name, "status": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            torch._dynamo.reset()
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


def _set_constant(item: str) -> None:
    import importlib
    target, _, value = item.partition("=")
    module, _, name = target.rpartition(".")
    mod = importlib.import_module(f"engines.sdnq.{module}")
    if not hasattr(mod, name):
        sys.exit(f"--set {item}: engines.sdnq.{module} has no {name}")
    setattr(mod, name, int(value))


def _set_inductor(item: str) -> None:
    import ast

    import torch._inductor.config as config
    name, _, value = item.partition("=")
    *path, leaf = name.split(".")
    target = config
    for part in path:
        target = getattr(target, part, None)
        if target is None:
            sys.exit(f"--inductor {item}: torch._inductor.config has no {name}")
    if not hasattr(target, leaf):
        sys.exit(f"--inductor {item}: torch._inductor.config has no {name}")
    try:
        setattr(target, leaf, ast.literal_eval(value))
    except (ValueError, SyntaxError):
        sys.exit(f"--inductor {item}: {value!r} is not a Python literal")


def table(results) -> str:
    ok = {r["config"]: r for r in results["rows"] if r.get("status") == "ok"}
    eager = ok.get("bf16 eager", {}).get("s_per_step")
    peers = [r["s_per_step"] for n, r in ok.items() if CONFIGS.get(n, {}).get("kind") in PEERS]
    best_peer = min(peers) if peers else None
    lines = [f"\n{results['model']} on {results['device']} (torch {results['torch']}); first calls from "
             f"{'an empty compile cache per row' if results.get('fresh_cache') else 'a shared compile cache'}\n",
             "| config | s/step (median) | [min, max] | x BF16 eager | x best peer | first call (s) | weights GiB "
             "| quantize peak +GiB | rel err vs bf16 | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['config']} | | | | | | | | | {r['status']} |")
            continue
        step = r["s_per_step"]
        vs_eager = f"{step / eager:.3f}" if eager else "-"
        vs_peer = f"{step / best_peer:.3f}" if best_peer else "-"
        lines.append(f"| {r['config']} | {step:.4f} | [{r['s_per_step_min']:.4f}, {r['s_per_step_max']:.4f}] | "
                     f"{vs_eager} | {vs_peer} | {r['first_call_s']:.1f} | {r['weights_gib']:.3f} | "
                     f"{r['quantize_peak_extra_gib']:.2f} | {r['rel_err_vs_bf16']:.4f} | ok |")
    lines.append("\nx BF16 eager / x best peer: s/step divided by BF16 eager's / by the fastest torchao or public "
                 "sdnq row's (below 1 = faster)")
    for p in results["pre_mode"]:
        lines.append(f"\npre mode {p['dtype']}: final {p['final_gib']:.2f} GiB, peak {p['peak_gib']:.2f} GiB, "
                     f"{p['seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
