"""Scale-out presets: the joblib launcher with one GPU per job, submitit (local executor) and SLURM (a fake
``sbatch`` on PATH keeps the batch script the preset generates). CPU only: GPU ids are handed out as
CUDA_VISIBLE_DEVICES values and the cells run on the CPU."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.gpus import OneGpuPerJob
from harness.store import ResultStore

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

PG_URL = os.environ.get("HARNESS_TEST_POSTGRES_URL")


def _job(tmp_path, num):
    return SimpleNamespace(hydra=SimpleNamespace(job=SimpleNamespace(num=num),
                                                 runtime=SimpleNamespace(output_dir=str(tmp_path / f"job{num}"))))


def test_each_running_job_leases_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    workers = [OneGpuPerJob(gpus="0,1", lock_dir=str(tmp_path / "leases"), wait_s=0.2) for _ in range(3)]
    workers[0].on_job_start(_job(tmp_path, 0))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    workers[1].on_job_start(_job(tmp_path, 1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(TimeoutError, match="no free GPU"):  # both GPUs taken: the third job waits
        workers[2].on_job_start(_job(tmp_path, 2))
    workers[0].on_job_end(_job(tmp_path, 0))
    workers[2].on_job_start(_job(tmp_path, 2))  # GPU 0 is free again
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    for w, n in ((workers[1], 1), (workers[2], 2)):
        w.on_job_end(_job(tmp_path, n))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # restored
    assert json.loads((tmp_path / "job1" / "gpu.json").read_text())["gpu"] == "1"


def test_slots_let_jobs_share_a_gpu_first_slots_first(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    workers = [OneGpuPerJob(gpus="0,1", lock_dir=str(tmp_path / "leases"), wait_s=0.2, slots=2) for _ in range(5)]
    seen = []
    for n, w in enumerate(workers[:4]):
        w.on_job_start(_job(tmp_path, n))
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0", "1", "0", "1"]  # every GPU's first slot before any second one
    with pytest.raises(TimeoutError):
        workers[4].on_job_start(_job(tmp_path, 4))
    for n, w in enumerate(workers[:4]):
        w.on_job_end(_job(tmp_path, n))
    assert json.loads((tmp_path / "job2" / "gpu.json").read_text())["slot"] == 1
    with pytest.raises(ValueError, match="slots must be at least 1"):
        OneGpuPerJob(gpus="0", slots=0)


def test_gpu_list_defaults_to_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert OneGpuPerJob().gpus == ["2", "3"]
    assert OneGpuPerJob(gpus=[4, 6]).gpus == ["4", "6"]


def _harness(args, tmp_path, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(360)  # ~15 s idle: 3x that busy, with a margin (its subprocess gets 300 s)
def test_joblib_preset_runs_cells_in_parallel_one_gpu_each(tmp_path, cache_dir, store_path):
    """Two workers, two (pretend) GPUs; every result lands in one store (PostgreSQL when a server is up)."""
    store = str(store_path)
    if PG_URL:
        from tests.harness.test_store import postgres_schema_url

        store = postgres_schema_url(PG_URL)
    proc = _harness(["-m", "hydra/launcher=joblib-gpus", "model=flux-tiny", "engine=bf16,torchao", "run.device=cpu",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path,
                    {"HARNESS_GPUS": "0,1", "HARNESS_STORE": store, "HARNESS_CACHE": str(cache_dir),
                     "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    leases = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/gpu.json")]
    assert sorted(lease["job"] for lease in leases) == [0, 1]
    for a in leases:  # jobs that overlapped in time had different GPUs
        for b in leases:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["gpu"] != b["gpu"]
    assert all(lease["pid"] != os.getpid() for lease in leases)
    # One record per cell. (Both workers may measure the shared BF16 reference when neither finds it cached
    # yet: the store then holds two measurements of that cell, and reports read the newest.)
    records = list(ResultStore(store).records())
    assert sorted(r["engine"] for r in records) == ["bf16", "torchao"] and {r["status"] for r in records} == {"ok"}


@pytest.mark.slow
@pytest.mark.timeout(360)  # ~15 s idle: 3x that busy, with a margin (its subprocess gets 300 s)
def test_submitit_local_executor_runs_the_sweep(tmp_path, cache_dir, store_path):
    proc = _harness(["-m", "hydra/launcher=submitit_local", "model=flux-tiny", "engine=bf16", "run.device=cpu",
                     "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path,
                    {"HARNESS_STORE": str(store_path), "HARNESS_CACHE": str(cache_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in ResultStore(store_path).records()] == ["ok"]
    # The job ran in a process submitit started, with its logs in the submitit folder.
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))


FAKE_SBATCH = """#!/usr/bin/env bash
# Fake sbatch: keep the batch script submitit generated and the arguments, then refuse the submission.
for last; do :; done
cp "$last" "$SBATCH_CAPTURE_DIR/job.sh"
printf '%s\\n' "$@" > "$SBATCH_CAPTURE_DIR/args.txt"
echo "fake sbatch: script captured, nothing submitted" >&2
exit 1
"""


def test_slurm_preset_generates_a_one_gpu_array_job(tmp_path, store_path):
    bin_dir, capture = tmp_path / "bin", tmp_path / "capture"
    bin_dir.mkdir()
    capture.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")):  # submitit looks for srun
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    proc = _harness(["-m", "hydra/launcher=slurm", "model=flux-tiny", "engine=bf16,torchao", "dtype=null",
                     "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30",
                     "hydra.launcher.setup=[source /opt/venv/bin/activate]", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                    tmp_path, {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_CAPTURE_DIR": str(capture),
                               "HARNESS_STORE": str(store_path)}, timeout=120)
    assert "fake sbatch: script captured" in proc.stderr
    script = (capture / "job.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --nodes=1", "#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=96GB", "source /opt/venv/bin/activate", "-m submitit.core._submit"):
        assert line in script, line
    assert script.index("source /opt/venv/bin/activate") < script.index("srun ")
    assert (capture / "args.txt").read_text().splitlines()[-1].endswith(".sh")
    # Nothing ran: no record was written.
    assert not Path(store_path).exists() or ResultStore(store_path).count() == 0


def _compose(overrides, hydra_config=True):
    from hydra import compose, initialize_config_dir

    from harness.schema import register

    register()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.mark.parametrize("experiment, models, cells", [("nightly", {"flux-dev", "sdxl"}, 10),
                                                       ("leaderboard-sdxl", {"sdxl"}, 12)])
def test_experiment_cells_all_validate(experiment, models, cells):
    """Every combination the experiment sweeps is a valid cell, or a dtype outside that engine's vocabulary
    (skipped by the sweep); the sweep covers the cells it promises."""
    import itertools

    from harness.errors import UnsupportedDtype
    from harness.validate import validate

    cfg = _compose([f"+experiment={experiment}"])
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    valid = set()
    for combo in itertools.product(*params.values()):
        overrides = [f"+experiment={experiment}", *(f"{k}={v}" for k, v in zip(params, combo))]
        try:
            cell = validate(_compose(overrides, hydra_config=False))
        except UnsupportedDtype:
            continue
        valid.add((cell.model["name"], cell.engine, cell.dtype))
    assert {m for m, _, _ in valid} == models and len(valid) == cells


@pytest.mark.parametrize("preset, target", [
    ("joblib-gpus", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")])
def test_launcher_presets_compose(preset, target, monkeypatch):
    monkeypatch.setenv("HARNESS_GPU_JOBS", "4")
    cfg = _compose([f"hydra/launcher={preset}", "+experiment=nightly"])
    assert cfg.hydra.launcher._target_ == target
    if preset == "joblib-gpus":
        assert cfg.hydra.launcher.n_jobs == 4
        assert cfg.hydra.callbacks.one_gpu_per_job._target_ == "harness.gpus.OneGpuPerJob"
    else:
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1
