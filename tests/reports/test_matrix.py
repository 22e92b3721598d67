"""The error matrix from fabricated records (every status, grouping, annotations), its CLI, and a CPU
matrix sweep on tiny FLUX through the harness CLI."""
import csv
import os
import subprocess
import sys

import pytest

from harness.status import error_record
from reports import matrix


def _rec(engine, dtype, offload, status, error=None, compile="none", created="2026-11-21T10:00:00",
         model="flux-dev", device="NVIDIA H200", exc_type="RuntimeError", stage=None):
    err = {**error_record(exc_type, error), "stage": stage} if error else None
    return {"cell_key": f"{model}-{engine}-{dtype}-{offload}-{compile}-{created}", "model": model, "engine": engine,
            "dtype": dtype, "mode": "post", "offload": offload, "compile": compile, "status": status,
            "created": created, "error": err,
            "workload": {"name": "quick", "steps": 4, "width": 512, "height": 512},
            "quality": {"synthetic_weights": True},
            "env": {"device_name": device, "driver": "570.86", "cuda": "12.8", "git_sha": "abc123",
                    "versions": {"torch": "2.11.0", "diffusers": "0.42.1", "bitsandbytes": "0.50.2"}}}


BLOCKWISE = "Blockwise quantization only supports 16/32-bit floats, but got torch.uint8"
OOM = "OutOfMemoryError"
RECORDS = [
    _rec("bf16", "bf16", "none", "ok"),
    _rec("bf16", "bf16", "sequential", "ok"),
    # two cells, one failure: numbers and sizes differ, the normalized message is the same
    _rec("bnb", "nf4", "sequential", "error", BLOCKWISE),
    _rec("bnb", "nf4", "group", "error", BLOCKWISE, stage="first call (1 of 1), before its first step"),
    _rec("quanto", "int8", "balanced", "ok"),                                      # known broken: now works
    _rec("quanto", "int8", "sequential", "error", "Expected all tensors to be on the same device, but found "
         "at least two devices, cuda:0 and cpu!"),
    _rec("sdnq", "int8", "balanced", "crashed", "cell process killed by SIGSEGV", exc_type="SIGSEGV"),  # documented ok
    _rec("torchao", "int4", "model", "oom", "CUDA out of memory. Tried to allocate 1.50 GiB", exc_type=OOM),
    _rec("torchao", "int4", "group", "oom", "CUDA out of memory. Tried to allocate 20.00 MiB", exc_type=OOM),
    _rec("torchao", "int8", "sequential", "timeout", "cell exceeded its timeout of 300 s during first call (1 of 1), "
         "step 2 of 4 done (for the last 250 s)", exc_type="Timeout", stage="first call (1 of 1), step 2 of 4 done"),
    _rec("gguf", "q8_0", "model", "unsupported", "offload=model needs a CUDA accelerator; this run's device is cpu",
         exc_type="Unsupported"),
    _rec("gguf", "q8_0", "balanced", "unsupported",
         "offload=balanced needs a CUDA accelerator; this run's device is cpu", exc_type="Unsupported"),
    _rec("torchao", "int8", "none", "error", "matmul <bad> & 'shapes' (4x8 @ 16x8)", compile="regional"),
]

KNOWN = [
    {"key": "K1", "id": "bnb-nf4-seq", "engine": "bnb", "dtype": "nf4", "offload": "sequential",
     "expect": {"status": "failure", "message": "Blockwise quantization only supports 16/32-bit floats"},
     "source": "SD.Next wiki"},
    {"key": "K2", "id": "quanto-balanced", "engine": "quanto", "dtype": ["int8", "int4"], "offload": "balanced",
     "expect": {"status": "failure", "message": "QBytesTensor.__new__() missing 5 required positional arguments"},
     "source": "SD.Next wiki"},
    {"key": "K3", "id": "quanto-seq", "engine": "quanto", "offload": "sequential",
     "expect": {"status": "error", "message": "QBytesTensor"}, "source": "made up: the message differs"},
    {"key": "K4", "id": "sdnq-balanced", "engine": "sdnq", "offload": "balanced", "expect": {"status": "ok"},
     "source": "SD.Next wiki"},
    {"key": "K5", "id": "torchao-int4-offload", "engine": "torchao", "dtype": "int4", "offload": ["model", "group"],
     "expect": {"status": "failure"}, "source": "SD.Next wiki"},
    {"key": "K6", "id": "gguf-offload", "engine": "gguf", "offload": "*", "expect": {"status": "failure"},
     "source": "SD.Next wiki"},
    {"key": "K7", "id": "nncf-fused", "engine": "nncf", "when": "fused projections", "expect": {"status": "failure"},
     "source": "SD.Next wiki"},
]


def _row(df, engine, dtype, offload, compile="none"):
    rows = df[(df.engine == engine) & (df.dtype == dtype) & (df.offload == offload) & (df.compile == compile)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_one_row_per_combination_with_status_type_and_first_line():
    older = _rec("bf16", "bf16", "none", "error", "an old failure", created="2026-11-20T10:00:00")
    df = matrix.matrix_frame([older, *RECORDS], KNOWN)
    assert len(df) == len(RECORDS)  # the newest record of a combination wins
    assert set(df.status) == {"ok", "unsupported", "error", "oom", "timeout", "crashed"}
    assert _row(df, "bf16", "bf16", "none").status == "ok"
    quanto = _row(df, "quanto", "int8", "sequential")
    assert quanto.error_type == "RuntimeError" and quanto.message.startswith("Expected all tensors")
    assert _row(df, "torchao", "int8", "sequential").status == "timeout"
    assert _row(df, "sdnq", "int8", "balanced").error_type == "SIGSEGV"
    assert df.iloc[0].engine == "bf16"  # the reference first
    assert _row(df, "bf16", "bf16", "none").error_group is None  # missing values are None, not NaN


def test_identical_errors_are_grouped_once_with_every_combination():
    groups = matrix.error_groups(RECORDS, KNOWN)
    by_type = {}
    for g in groups:
        by_type.setdefault((g["status"], g["type"]), []).append(g)
    (bnb,) = [g for g in groups if "Blockwise" in g["message"]]
    assert bnb["count"] == 2 and bnb["id"] == "E1"  # most cells first
    assert bnb["cells"] == ["bnb:nf4 offload=sequential compile=none", "bnb:nf4 offload=group compile=none"]
    assert bnb["known"] == ["K1"]
    assert bnb["stages"] == [None, "first call (1 of 1), before its first step"]  # a record may have none
    # out-of-memory with different sizes: one group
    (oom,) = by_type[("oom", "OutOfMemoryError")]
    assert oom["count"] == 2 and "<size>" in oom["normalized"]
    # the two unsupported reasons differ only by the mode name: two groups, listed after the failures
    unsupported = [g for g in groups if g["status"] == "unsupported"]
    assert [g["id"] for g in unsupported] == ["U1", "U2"] and groups[-2:] == unsupported
    assert sum(g["count"] for g in groups) == sum(r["status"] != "ok" for r in RECORDS)


@pytest.mark.parametrize("engine, dtype, offload, expected, disagrees", [
    ("bnb", "nf4", "sequential", "K1: reproduces", False),
    ("quanto", "int8", "balanced", "K2: no longer reproduces", True),
    ("quanto", "int8", "sequential", "K3: fails differently", True),
    ("sdnq", "int8", "balanced", "K4: fails, documented to work", True),
    ("torchao", "int4", "model", "K5: reproduces", False),   # oom counts as a failure
    ("gguf", "q8_0", "model", "K6: untested here", False),   # unsupported here: no evidence either way
    ("bf16", "bf16", "none", None, False),
], ids=["reproduces", "no-longer-reproduces", "fails-differently", "documented-ok-fails", "oom-failure",
        "unsupported-untested", "no-annotation"])
def test_annotations_agree_or_disagree_with_reality(engine, dtype, offload, expected, disagrees):
    row = _row(matrix.matrix_frame(RECORDS, KNOWN), engine, dtype, offload)
    assert row.verdicts == expected and bool(row.disagrees) is disagrees


def test_render_writes_markdown_and_csv_with_provenance(tmp_path):
    paths = matrix.render(RECORDS, tmp_path, KNOWN)
    md = paths["markdown"].read_text()
    assert "## flux-dev on NVIDIA H200" in md
    for text in ("570.86", "12.8", "torch 2.11.0", "bitsandbytes 0.50.2", "512x512 px", "4 steps",
                 "not benchmarks", "abc123", "synthetic"):
        assert text in md, text
    assert "### compile=none" in md and "### compile=regional" in md
    assert "| bnb:nf4 | - | - | error E1 [K1✓] | error E1 |" in md
    assert "ok [K2✗]" in md and "crashed E" in md and "[K4✗]" in md and "unsupported U" in md
    news = md.split("## Where reality disagrees")[1].split("##")[0]
    assert "quanto:int8 offload=balanced" in news and "no longer reproduces" in news
    assert "sdnq:int8 offload=balanced" in news and "bnb:nf4" not in news
    assert "not covered by this matrix: fused projections" in md
    assert "- bnb:nf4 offload=group compile=none (in first call (1 of 1), before its first step)\n" in md
    assert "- bnb:nf4 offload=sequential compile=none\n" in md
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(RECORDS)
    assert {"status", "error_type", "message", "stage", "error_group", "verdicts"} <= set(rows[0])
    timeout = [r for r in rows if r["status"] == "timeout"][0]
    assert timeout["stage"] == "first call (1 of 1), step 2 of 4 done"


def test_html_fragment_escapes_and_marks_statuses():
    fragment = matrix.to_html(RECORDS, KNOWN)
    assert not fragment.lstrip().startswith(("<html", "<!DOCTYPE")) and "<body" not in fragment
    for status in ("ok", "unsupported", "error", "oom", "timeout", "crashed"):
        assert f"status-{status}" in fragment
    assert "disagrees" in fragment and "&lt;bad&gt; &amp; &#x27;shapes&#x27;" in fragment
    assert "<bad>" not in fragment
    assert "| in first call (1 of 1), before its first step" in fragment  # a failed cell's stage, in its tooltip
    assert "No results" in matrix.to_html([], KNOWN)


def test_empty_matrix(tmp_path):
    assert matrix.matrix_frame([], KNOWN).empty
    assert "No results in the store yet" in matrix.render([], tmp_path, KNOWN)["markdown"].read_text()


def test_shipped_known_issues_cover_the_documented_reports():
    known = matrix.load_known_issues()
    assert all(k["source"] and k["expect"] for k in known)
    messages = " ".join(k["expect"].get("message", "") for k in known)
    for text in ("Blockwise quantization only supports 16/32-bit floats",
                 "QBytesTensor.__new__() missing 5 required positional arguments",
                 "Expected all tensors to be on the same device"):
        assert text in messages
    ids = {k["id"] for k in known}
    assert {"gguf-offload", "torchao-int4-offload", "nncf-fused-projections"} <= ids
    cell = {"engine": "quanto", "dtype": "int4", "offload": "balanced", "compile": "regional", "model": "flux-dev"}
    assert [k["id"] for k in known if matrix.applies(k, cell)] == ["quanto-balanced"]


def test_bad_known_issue_file_is_refused(tmp_path):
    bad = tmp_path / "known.yaml"
    bad.write_text("- id: x\n  engine: bnb\n")
    with pytest.raises(ValueError, match="needs engine, expect and source"):
        matrix.load_known_issues(bad)


def _python(*args, env=None, cwd=None, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def test_cli_renders_from_a_store(tmp_path):
    from harness.store import ResultStore

    store = ResultStore(tmp_path / "s.sqlite")
    for r in RECORDS:
        store.append(r)
    proc = _python("-m", "reports.matrix", "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "matrix.md").is_file() and (tmp_path / "out" / "matrix.csv").is_file()
    missing = _python("-m", "reports.matrix", "--store", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "no result store" in missing.stderr


@pytest.mark.parametrize("experiment", ["matrix", "matrix-cpu"])
def test_matrix_experiments_compose(compose, experiment):
    from harness.validate import validate

    cfg = compose([f"+experiment={experiment}"])
    assert cfg.workload.warmup == 0 and cfg.metrics.save_images is False
    validate(cfg)


def test_cpu_matrix_sweep_then_report(cli, tmp_path, store_path):
    """The CI-sized matrix end to end: sweep (isolated cells) -> store -> matrix.md / matrix.csv."""
    proc = cli("+experiment=matrix-cpu", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "HARNESS_STORE": str(store_path)}
    out = tmp_path / "matrix"
    report = _python("-m", "reports.matrix", "--out", str(out), env=env)
    assert report.returncode == 0, report.stderr
    with open(out / "matrix.csv") as fh:
        rows = {(r["engine"], r["dtype"], r["offload"]): r for r in csv.DictReader(fh)}
    # 4 engine:dtype x 2 offload modes; bf16:int8, torchao:bf16, ... were skipped by the sweep
    assert len(rows) == 8
    assert {r["status"] for k, r in rows.items() if k[2] == "none"} == {"ok"}
    balanced = [r for k, r in rows.items() if k[2] == "balanced"]
    assert {r["status"] for r in balanced} == {"unsupported"} and len({r["error_group"] for r in balanced}) == 1
    md = (out / "matrix.md").read_text()
    assert "## flux-tiny on" in md and "64x64 px, 2 steps" in md and "| quanto:int8 | ok | unsupported U1" in md


def test_gpu_caps_are_listed_as_fraction_and_gib_pairs():
    def capped(record, fraction, gib):
        record = {**record, "config": {"run": {"gpu_memory_fraction": fraction}}, "env": dict(record["env"])}
        if gib is not None:
            record["env"]["gpu_cap_gib"] = gib
        return record

    records = [capped(RECORDS[0], 0.46, 64.308), capped(RECORDS[2], 0.46, None),  # failed before it knew
               capped(RECORDS[3], 0.92, 128.617)]
    (cap,) = [text for label, text in matrix.provenance(records) if label == "GPU memory cap"]
    assert cap.startswith("0.46 of the card = 64.308 GiB, 0.92 of the card = 128.617 GiB per cell")
    by_gib = [{**r, "env": {**r["env"], "gpu_cap_gib": g}} for r, g in zip(RECORDS[:2], (24.0, 16.0))]
    (cap,) = [text for label, text in matrix.provenance(by_gib) if label == "GPU memory cap"]
    assert cap.startswith("16 GiB, 24 GiB per cell")  # caps given in GiB are not merged into one
