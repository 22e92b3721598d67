"""Helpers for testing SDNQ's Triton kernels without a GPU: Triton's interpreter (in a subprocess, since
TRITON_INTERPRET must be set before Triton is imported) and ahead-of-time compilation to a cubin."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run_interpreted(script: str, timeout: int = 240) -> None:
    """Run ``script`` under TRITON_INTERPRET=1 from the repo root; it must print ``ok`` last."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def compile_for(kernel, cap: int, signature: dict, constants: dict):
    """Compile the @triton.jit ``kernel`` for compute capability ``cap`` with Triton's own ptxas (no GPU).
    ``signature`` maps the runtime arguments to Triton types; ``constants`` the constexprs."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**signature, **{name: "constexpr" for name in constants}}
    try:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    except TypeError as err:  # another Triton's compile API: this check is for the version CI installs
        pytest.skip(f"this Triton's ASTSource differs: {err}")
    return triton.compile(source, target=GPUTarget("cuda", cap, 32))


def code_type(mode: int) -> str:
    """The Triton pointer type of the codes for a kernel ``MODE`` (int8 is stored signed)."""
    return "*i8" if mode == 0 else "*u8"
