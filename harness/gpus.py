"""One GPU per job when a Hydra launcher runs several cells at once on one host.

`OneGpuPerJob` is a Hydra callback (``conf/hydra/launcher/joblib-gpus.yaml`` installs it). When a job starts
in a launcher worker it leases a free GPU - an exclusive ``flock`` on ``<lock_dir>/gpu<N>.lock``, waiting
when every GPU is taken - and sets ``CUDA_VISIBLE_DEVICES=N`` before the cell is forked, so the cell sees
that GPU alone (as ``cuda:0``, i.e. ``run.device=auto``). The lease ends with the job (or with the worker
process, whatever kills it). So no two jobs share a GPU, whatever order the launcher dispatches jobs in -
which a mapping from ``hydra.job.num`` to a GPU index cannot promise once jobs take unequal times. Leases
are per host, so two sweeps started side by side share the GPUs too.

``slots`` > 1 lets that many jobs share one GPU (lease files ``gpu<N>.lock``, ``gpu<N>-1.lock``, ...; every
GPU's first slot is handed out before any second one). Only for sweeps whose timings do not matter, such as
the error matrix, and with ``run.gpu_memory_fraction`` at most 1/slots so that the jobs cannot starve each other.

Each job writes ``gpu.json`` (GPU, slot, worker pid, start and end times) into its output folder.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU NVML counts (no CUDA
    context is created)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no NVML, no driver: no GPUs
        return []


class OneGpuPerJob(Callback):
    """Lease one GPU per running job (see the module docstring).

    gpus: GPU ids to hand out ("0,1" or a list); None = the GPUs visible to the launching process.
    lock_dir: where the lease files live (one host, one folder); None = ``$TMPDIR/harness-gpu-leases``.
    wait_s: how long a job waits for a free GPU before failing.
    slots: jobs that may share one GPU (1 = a GPU per job).
    """

    def __init__(self, gpus: Any = None, lock_dir: str | None = None, wait_s: float = 24 * 3600, slots: int = 1):
        if isinstance(gpus, str):
            gpus = [g.strip() for g in gpus.split(",") if g.strip()]
        elif isinstance(gpus, int):
            gpus = [str(gpus)]
        self.gpus = [str(g) for g in gpus] if gpus else visible_gpus()
        self.lock_dir = lock_dir or str(Path(tempfile.gettempdir()) / "harness-gpu-leases")
        self.wait_s = wait_s
        self.slots = int(slots)
        if self.slots < 1:
            raise ValueError(f"OneGpuPerJob: slots must be at least 1, got {slots}")
        self._lease: tuple[int, str, int] | None = None
        self._saved_env: str | None = None
        self._started = 0.0

    def __getstate__(self):  # crosses into launcher workers: no open lease travels with it
        return {**self.__dict__, "_lease": None}

    def on_job_start(self, config, **kwargs) -> None:
        if not self.gpus:
            log.warning("OneGpuPerJob: no GPUs to hand out; the job runs without a GPU lease")
            return
        Path(self.lock_dir).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while self._lease is None:
            for slot, gpu in ((s, g) for s in range(self.slots) for g in self.gpus):
                name = f"gpu{gpu}.lock" if slot == 0 else f"gpu{gpu}-{slot}.lock"
                fd = os.open(Path(self.lock_dir) / name, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self._lease = (fd, gpu, slot)
                break
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no free GPU among {self.gpus} after {self.wait_s:g} s")
                time.sleep(0.5)
        self._saved_env = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = self._lease[1]
        self._started = time.time()
        log.info("job %s: GPU %s slot %d (worker pid %d)", config.hydra.job.num, self._lease[1], self._lease[2],
                 os.getpid())

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        if self._lease is None:
            return
        fd, gpu, slot = self._lease
        out = Path(str(config.hydra.runtime.output_dir))
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.json").write_text(json.dumps({"gpu": gpu, "slot": slot, "pid": os.getpid(), "job": config.hydra.job.num,
                                                  "start": self._started, "end": time.time()}))
        if self._saved_env is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self._saved_env
        # LOCK_UN releases the lease even if a forked cell still holds a copy of the descriptor.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        self._lease = None
