"""Hostile and careless input through the real CLI: every rejection is one line naming the valid choices,
exit code 2, no traceback and nothing written; checkpoints never run code; names never become paths
outside outputs/; concurrent cells neither share a run directory nor duplicate a record; a store that
fails mid-sweep loses nothing and leaves nothing half-written."""
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["workload.height=64", "workload.width=64", "workload.steps=2", "metrics.save_images=false",
        "metrics.lpips=false", "metrics.clip=false", "run.device=cpu"]


def written(root: Path, store: Path) -> list[str]:
    """Everything a run could have left under the test's folder (besides the shared cache)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) + \
        ([str(store)] if store.exists() else [])


def assert_rejected(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    pytest.param(["engine.options.group_sise=64"], ["no option 'group_sise'", "Did you mean: group_size",
                                                    "Options: group_size, granularity"], id="option-typo"),
    pytest.param(["engine=torchao", "engine.options.group_size=-5"], ["group_size=-5", "32 | 64 | 128 | 256"],
                 id="torchao-option-range"),
    pytest.param(["engine=sdnq", "engine.options.group_size=-3"], ["group_size=-3", ">= -1"], id="sdnq-option-range"),
    pytest.param(["engine=sdnq", "engine.options.int8_backend=cublas"], ["auto | triton | torch"],
                 id="sdnq-backend-choice"),
    pytest.param(["offload=balanced", "offload.options.high_watermark=3"], ["high_watermark"], id="offload-range"),
    pytest.param(["offload=group", "offload.options.offload_type=disk"], ["block_level", "leaf_level"],
                 id="offload-choice"),
    pytest.param(["compile=none", "compile.fullgraph=true"], ["fullgraph"], id="compile-option-of-another-mode"),
    pytest.param(["workload.stepz=3"], ["workload.stepz", "Did you mean: workload.steps"], id="key-typo"),
    pytest.param(["workload.steps=many"], ["workload.steps", "Integer"], id="wrong-type"),
    pytest.param(["workload.steps=0"], ["workload.steps must be at least 1"], id="zero-steps"),
    pytest.param(["model.frames=5"], ["model.frames is for video models"], id="frames-of-an-image-model"),
    pytest.param(["model=wan22-ti2v-5b-tiny", "model.frames=4"], ["4k + 1 frames", "e.g. 5"], id="frames-stride"),
    pytest.param(["+model.call.num_inference_steps=50"], ["model.call may not set num_inference_steps"],
                 id="call-overrides-the-workload"),
    pytest.param(["workload.height=100"], ["not a positive multiple of 16"], id="bad-resolution"),
    pytest.param(["run.device=cuda:7"], ["run.device=cuda:7"], id="absent-gpu"),
    pytest.param(["run.device=tpu"], ["auto, cpu, cuda or cuda:N"], id="unknown-device"),
    pytest.param(["engine=torchoa"], ["Did you mean: torchao?", "Available:"], id="engine-typo"),
    pytest.param(["dtype=nf4"], ["does not support dtype 'nf4'", "Supported: int8"], id="dtype-outside-vocab"),
    pytest.param(["model.name=/../../../../tmp/x/MODEL"], ["not a safe name"], id="traversal-model-name"),
    pytest.param(["model.name=../escape"], ["not a safe name"], id="relative-model-name"),
    pytest.param(["workload.name=a/b"], ["not a safe name"], id="traversal-workload-name"),
    pytest.param(["dtype=../../x"], ["does not support dtype"], id="traversal-dtype"),
    pytest.param(["engine.name=../x"], ["Unknown engine"], id="traversal-engine"),
    pytest.param(["+experiment=../../etc"], ["Unknown experiment"], id="traversal-experiment"),
    pytest.param(["model.path=/no/such/folder"], ["does not exist"], id="missing-checkpoint"),
    pytest.param(["run.store=postgresql://nobody@127.0.0.1:9/none"], ["cannot reach PostgreSQL"],
                 id="unreachable-postgres"),
    pytest.param(["-cd", "/tmp"], ["--config-dir are not supported"], id="foreign-config-dir"),
    pytest.param(["engine=bf16,torchao"], ["add -m"], id="sweep-without-m"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, store_path, args, needles):
    started = time.monotonic()
    proc = cli(*args)
    assert_rejected(proc, *needles)
    assert written(tmp_path, store_path) == []
    assert time.monotonic() - started < 60  # no retry loop against an unreachable store


@pytest.mark.timeout(120)  # ~8 s idle: 3x that busy, with a margin
def test_a_store_that_is_not_a_database_is_refused(cli, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    assert_rejected(cli(f"run.store={text}"), "is not an SQLite result store")
    assert_rejected(cli(f"run.store={tmp_path}"), "is not a file")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_rejected(cli(f"run.store={blocker / 'sub' / 'r.sqlite'}"), "is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "notes.txt"]


@pytest.mark.parametrize("index, needle", [('{"transformer": []}', "is not a [library, class] pair"),
                                          ("[1, 2]", "not a JSON object"), ("{", "is corrupt")],
                         ids=["empty-entry", "not-an-object", "not-json"])
def test_a_malformed_model_index_is_one_line(cli, tmp_path, store_path, index, needle):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model_index.json").write_text(index)
    assert_rejected(cli(f"model.path={folder}"), needle)
    assert not store_path.exists() and not (tmp_path / "outputs").exists()


def test_unknown_subcommand_gets_did_you_mean(cli, tmp_path, store_path):
    assert_rejected(cli("lst"), "Did you mean: list?", "Subcommands: list, report")
    assert written(tmp_path, store_path) == []


def test_help_lists_subcommands_and_groups_without_internals(cli):
    proc = cli("--help")
    assert proc.returncode == 0
    out = proc.stdout
    assert "list" in out and "report" in out and "torchao" in out and "balanced" in out and "regional" in out
    import re

    assert "base_" not in out and not re.search(r"\bfault\b", out) and "exit codes" in out


def _poisoned_checkpoint(cache_dir: Path, tmp_path: Path, index_entry) -> tuple[Path, Path]:
    """A copy of the tiny FLUX checkpoint whose model_index.json names ``index_entry`` for the transformer,
    with a module beside it that would write a marker file when imported."""
    from harness.synthetic import ensure_checkpoint

    source = ensure_checkpoint("flux-tiny", str(cache_dir))
    folder = tmp_path / "poisoned"
    folder.mkdir()
    for item in source.iterdir():
        (folder / item.name).symlink_to(item) if item.is_dir() else shutil.copy(item, folder / item.name)
    marker = tmp_path / "MARKER"
    for where in (folder, tmp_path):
        pkg = where / "evilpkg"
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Evil: pass\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer"] = index_entry
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder, marker


@pytest.mark.parametrize("entry", [["evilpkg.evil", "Evil"], ["evilpkg", "Evil"], ["diffusers", "__class__"],
                                   ["diffusers", "NoSuchModel"]], ids=["module", "package", "dunder", "missing"])
@pytest.mark.parametrize("mode", ["post", "pre"])
@pytest.mark.timeout(180)  # ~6 s idle (a reference and a cell): 3x that busy, with a margin
def test_a_checkpoint_never_runs_its_own_code(cli, cache_dir, tmp_path, store_path, entry, mode):
    folder, marker = _poisoned_checkpoint(cache_dir, tmp_path, entry)
    proc = cli(f"model.path={folder}", "engine=sdnq", f"engine.mode={mode}", *TINY)
    assert_rejected(proc, "model_index.json names")
    assert not marker.exists() and not store_path.exists() and not (tmp_path / "outputs").exists()


def test_an_sdnq_checkpoint_builds_only_diffusers_model_classes(tmp_path):
    from engines.sdnq import serialize

    marker = tmp_path / "MARKER"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Thing: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for name in ("evilmod:Thing", "evilmod:FluxTransformer2DModel", "diffusers.x:DiffusionPipeline",
                     "os:system", "diffusers.models:__class__", None):
            with pytest.raises(ValueError, match="only diffusers model classes"):
                serialize.model_class(name)
    finally:
        sys.path.remove(str(tmp_path))
    assert not marker.exists()
    from diffusers import FluxTransformer2DModel

    assert serialize.model_class("diffusers.models.x:FluxTransformer2DModel") is FluxTransformer2DModel


@pytest.mark.timeout(300)  # ~22 s idle: 3x that busy, with a margin
def test_a_cell_that_fails_exits_with_its_status_code(cli, store_path):
    assert cli("engine=fault", "dtype=raise", *TINY).returncode == 4
    assert cli("engine=fault", "dtype=unsupported", *TINY).returncode == 3
    again = cli("engine=fault", "dtype=raise", *TINY)  # already stored: the stored status's code again
    assert again.returncode == 4 and "already stored with status error" in again.stdout
    with sqlite3.connect(store_path) as db:
        assert sorted(s for (s,) in db.execute("SELECT status FROM results WHERE engine='fault'")) == \
            ["error", "unsupported"]


def _env(store, cache):
    return {**os.environ, "HARNESS_STORE": str(store), "HARNESS_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def _start(args, cwd, store, cache, **kw):
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=_env(store, cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~22 s idle: 3x that busy, with a margin
def test_two_cells_started_together_get_their_own_run_directories(cli, tmp_path, cache_dir, store_path):
    assert cli("engine=bf16", *TINY).returncode == 0  # the checkpoint and reference exist: both start at once
    procs = [_start(["engine=bf16", f"workload.seeds=[{seed}]", *TINY], tmp_path, store_path, cache_dir)
             for seed in (11, 12)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    dirs = sorted(p.parent for p in (tmp_path / "outputs" / "runs").rglob("result.json")
                  if "reference" not in p.parts and "workload.seeds" in (p.parent / ".hydra" / "overrides.yaml").read_text())
    assert len(dirs) == 2
    seeds = {}
    for d in dirs:
        record = json.loads((d / "result.json").read_text())
        overrides = (d / ".hydra" / "overrides.yaml").read_text()
        seeds[d.name] = record["config"]["workload"]["seeds"]
        assert f"workload.seeds=[{seeds[d.name][0]}]" in overrides  # record and overrides of one cell
    assert sorted(s[0] for s in seeds.values()) == [11, 12]


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~22 s idle: 3x that busy, with a margin
def test_the_same_cell_twice_at_once_is_stored_once(cli, tmp_path, cache_dir, store_path):
    assert cli("engine=bf16", *TINY).returncode == 0
    args = ["engine=torchao", "dtype=int8", *TINY]
    procs = [_start(args, tmp_path, store_path, cache_dir) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    with sqlite3.connect(store_path) as db:
        rows = db.execute("SELECT COUNT(*) FROM results WHERE engine='torchao'").fetchone()[0]
    assert rows == 1
    assert sum("skip (already stored" in out for out, _ in outs) == 1


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~22 s idle: 3x that busy, with a margin
def test_the_same_cell_twice_at_once_is_stored_once_in_postgres(cli, tmp_path, cache_dir):
    url = os.environ.get("HARNESS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HARNESS_TEST_POSTGRES_URL not set (source scripts/ci_services.sh to start a server)")
    from tests.harness.test_store import postgres_schema_url

    store = postgres_schema_url(url)
    args = ["engine=torchao", "dtype=int8", *TINY]
    assert subprocess.run([sys.executable, "-m", "harness", "engine=bf16", *TINY], cwd=tmp_path,
                          env=_env(store, cache_dir), capture_output=True, timeout=600).returncode == 0
    procs = [_start(args, tmp_path, store, cache_dir) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    from harness.store import ResultStore

    assert [r["engine"] for r in ResultStore(store).records(latest_only=False)].count("torchao") == 1


def test_kernel_backends_are_part_of_the_cell_key(compose, monkeypatch):
    from harness import resume
    from harness.validate import validate

    base = resume.cell_key(validate(compose(["engine=sdnq"])), "cpu", {})
    option = resume.cell_key(validate(compose(["engine=sdnq", "engine.options.int8_backend=torch"])), "cpu", {})
    monkeypatch.setenv("SDNQ_DEQUANT_BACKEND", "torch")
    from_env = validate(compose(["engine=sdnq"]))
    assert from_env.engine_options["dequant_backend"] == "torch"
    assert len({base, option, resume.cell_key(from_env, "cpu", {})}) == 3


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~25 s idle: 3x that busy, with a margin
def test_a_store_that_fills_up_mid_sweep_keeps_every_record_somewhere(cli, tmp_path, cache_dir):
    """Files may not grow past 36 KiB (as on a full disk): the store's WAL soon cannot, result.json can."""
    store = tmp_path / "full" / "results.sqlite"
    assert subprocess.run([sys.executable, "-m", "harness", "engine=bf16", *TINY], cwd=tmp_path,
                          env=_env(tmp_path / "warm.sqlite", cache_dir), capture_output=True,
                          timeout=600).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "harness", "-m", "engine=sdnq",
                           "dtype=int8,int7,int6,int5,int4,int3,uint8,uint6,uint4,uint2", *TINY],
                          cwd=tmp_path, env=_env(store, cache_dir), capture_output=True, text=True, timeout=900,
                          preexec_fn=_limit_file_size(36 * 1024))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = sorted((tmp_path / "outputs" / "multirun").rglob("result.json"))
    stored = set()
    try:
        with sqlite3.connect(store) as db:
            stored = {k for (k,) in db.execute("SELECT cell_key FROM results")}
    except sqlite3.Error:
        pass
    keys = {json.loads(p.read_text())["cell_key"] for p in results}
    missing = keys - stored
    assert missing, "the limit should have stopped some store writes"
    for key in missing:
        assert f"not stored: cell {key}" in proc.stderr and "kept in" in proc.stderr, proc.stderr[-4000:]
    assert not list(tmp_path.rglob(".result-*.tmp"))


@pytest.mark.parametrize("typo, message", [("engine=torchoa", "Did you mean: torchao?"),
                                           ("offload=balanc", "Did you mean: balanced?")])
def test_a_mistyped_choice_is_refused_before_torch_is_imported(typo, message):
    code = ("import sys\nfrom harness.cli import main\ncode = main([sys.argv[1]])\n"
            "print(code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, typo], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"] and message in proc.stderr
