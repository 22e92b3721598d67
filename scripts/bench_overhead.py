"""Harness overhead per cell in a CPU sweep (issue 2 target: under 1.5 s).

Runs one Hydra multirun of tiny cells in a fresh store and cache, then reports, per cell, the
harness's own time (`metrics.harness_overhead_s`: validation, fork, environment, quality, writing) and
the sweep's wall time beyond the cells' loading + generating work (which also holds Hydra's per-job
cost and the one-time interpreter start). Usage: python scripts/bench_overhead.py [N_CELLS<=9]
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

from harness.store import ResultStore


def main(n_variants: int = 6) -> None:
    work = tempfile.mkdtemp(prefix="overhead-")
    env = {**os.environ, "HARNESS_STORE": f"{work}/r.sqlite", "HARNESS_CACHE": f"{work}/cache"}
    # Warm the caches (synthetic checkpoint + BF16 reference) so the sweep measures steady state.
    subprocess.run([sys.executable, "-m", "harness", "engine=bf16", "workload.height=64", "workload.width=64"],
                   env=env, cwd=work, check=True, capture_output=True)
    dtypes = ",".join(["int8", "int7", "int6", "int5", "int4", "int3", "int2", "uint8", "uint4"][:n_variants])
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "-m", "engine=sdnq", f"dtype={dtypes}",
                    "workload.height=64", "workload.width=64", "metrics.save_images=false"],
                   env=env, cwd=work, check=True, capture_output=True)
    wall = time.perf_counter() - start
    records = [r for r in ResultStore(f"{work}/r.sqlite").records() if r["engine"] == "sdnq"]
    own = [r["metrics"]["harness_overhead_s"] for r in records if r["metrics"].get("harness_overhead_s") is not None]
    work_s = sum(r["metrics"]["load_s"] + r["metrics"]["first_call_s"] +
                 r["metrics"]["s_per_image"] * r["metrics"]["n_timed_calls"] for r in records if r["status"] == "ok")
    print(f"cells: {len(records)} (sharing one cached BF16 reference)")
    print(f"harness_overhead_s per cell: median {statistics.median(own):.3f} s, max {max(own):.3f} s")
    print(f"sweep wall {wall:.1f} s; cells' load+generate work {work_s:.1f} s; "
          f"everything else per cell {(wall - work_s) / len(records):.2f} s (one interpreter start included)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
