#!/usr/bin/env bash
# The lent GPU machine has torch / Triton / numpy / pandas / matplotlib but no network, so the harness's
# other dependencies travel with the working tree as wheels in .whl/ (git-ignored; carry it).
#
# Here, once:      bash scripts/device_env.sh download        (fills .whl/ from the package registry)
# On the device:   source scripts/device_env.sh <git sha>      (installs .whl/ into /tmp/site, sets the env)
#                  build flux-dev                              (synthetic checkpoint in the background;
#                                                               /tmp/flux-dev.done when it is ready)
# `build` draws the weights on the GPU, as a cell that finds no checkpoint does (harness/load.py), so a
# pre-built checkpoint holds the same numbers as one a run builds. Drawn on the CPU, FLUX.1-dev's 17 billion
# weights took ~9 min beside other work (session 4, 64 cores); the GPU build is not yet timed.
# A background job must be `setsid nohup`: a plain `&` dies with the command.
WHEELS="antlr4-python3-runtime==4.9.3 bitsandbytes==0.50.2 diffusers==0.42.1 gguf==0.19.0 hydra-core==1.3.8
hydra-joblib-launcher==1.2.0 joblib==1.6.0 lpips==0.1.4 nncf==3.4.0 omegaconf==2.3.0 openvino-telemetry==2025.2.0
optimum-quanto==0.2.7 peft==0.21.2 pydot==4.0.1 sdnq==0.2.8 torchao==0.17.0"
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)

if [[ "${1:-}" == download ]]; then
  # `pip wheel`, not `pip download`: antlr4-python3-runtime 4.9.3 (omegaconf's) is published as a source
  # archive only. Every wheel here is pure Python or abi3, so the device's Python 3.12 takes them.
  # shellcheck disable=SC2086
  "$PYTHON" -m pip wheel -q --no-deps -w .whl $WHEELS
  rc=$?
  # bitsandbytes ships one 4-26 MB library per CUDA / ROCm / XPU version; the device's torch is cu130, and the
  # carry limit is 64 MiB, so its wheel keeps the CPU and CUDA 13.x libraries only.
  [[ $rc == 0 ]] && "$PYTHON" - .whl/bitsandbytes-*.whl <<'PY'
import re, sys, zipfile
path = sys.argv[1]
keep = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
with zipfile.ZipFile(path) as src:
    items = [(i, src.read(i)) for i in src.infolist()
             if not re.search(r"libbitsandbytes_\w+\.so$", i.filename) or keep.search(i.filename)]
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
    for info, data in items:
        dst.writestr(info, data)
PY
  return $rc 2>/dev/null || exit $rc
fi
# Bytecode is compiled at install, as a user's `pip install` does, so no run pays for compiling it.
if [[ ! -f /tmp/site/.ok ]]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.ok
fi
export PYTHONPATH=/tmp/site:$PWD HARNESS_CACHE=/tmp/harness-cache HARNESS_GIT_SHA=${1:-unknown} PYTHONUNBUFFERED=1
# The lent machine's torch has no bytecode and the machine sets PYTHONDONTWRITEBYTECODE=1, so every Python
# process compiled torch from source again (session 11: `import torch` 6.1 s, then 3.7 s with the files
# cached). Bytecode for every installed package, the wheels and the harness goes once into
# PYTHONPYCACHEPREFIX, as a pip install would have written it beside them; it compiles in the background
# (about a minute on 16 cores) and the scripts that time a process wait for it (`$PYTHONPYCACHEPREFIX/.ok`).
_torch_dir=$("$PYTHON" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('torch').origin))" 2>/dev/null)
if [[ -n $_torch_dir && -z ${PYTHONPYCACHEPREFIX:-} ]] && ! compgen -G "$_torch_dir/__pycache__/*.pyc" > /dev/null; then
  export PYTHONPYCACHEPREFIX=/tmp/pycache
  if [[ ! -f /tmp/pycache/.ok && ! -f /tmp/pycache/.started ]]; then
    mkdir -p /tmp/pycache && touch /tmp/pycache/.started
    setsid nohup bash -c "\"$PYTHON\" -m compileall -q -j 0 \"$(dirname "$_torch_dir")\" /tmp/site harness engines reports conf \
      > /tmp/pycache.log 2>&1; touch /tmp/pycache/.ok" > /dev/null 2>&1 < /dev/null &
  fi
else
  # The harness runs from the working tree (PYTHONPATH), not an install: compile it once, as pip would.
  "$PYTHON" -m compileall -q -j 0 harness engines reports conf > /dev/null 2>&1
fi
echo "bytecode: torch in ${_torch_dir:-?}, PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}, PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-unset}"
build() {
  setsid nohup bash -c "\"$PYTHON\" -c \"from harness import synthetic; synthetic.ensure_checkpoint('$1', '/tmp/harness-cache', 'cuda')\" \
    > /tmp/$1.build.log 2>&1 && touch /tmp/$1.done" > /dev/null 2>&1 < /dev/null &
}
