"""The nightly regression check: thresholds, each tracked figure, missing and new cells, the command
(``python -m reports regression``) and scripts/nightly.sh around it."""
import copy
import os
import subprocess
from pathlib import Path

import pytest

from reports import regression
from reports.cli import main as reports_main
from reports.regression import compare, load_config
from tests.reports import samples


def main(argv):
    return reports_main(["regression", *argv])


def night(records):
    """The same cells measured on another night: other library versions, other resume keys."""
    out = copy.deepcopy(records)
    for r in out:
        r["cell_key"] += "-v2"
        r["env"]["versions"]["torch"] = "2.12.0"
        r["created"] = "2026-11-22T00:00:00"
    return out


@pytest.fixture
def baseline(tmp_path):
    return samples.leaderboard(tmp_path / "runs")


def _store(path, records):
    return samples.store(path, records)


def test_a_ten_percent_slowdown_fails(tmp_path, baseline, capsys):
    last = _store(tmp_path / "last.sqlite", baseline)
    same = _store(tmp_path / "same.sqlite", night(baseline))
    assert main(["--store", same, "--baseline", last]) == 0
    records = night(baseline)
    for r in records:
        if (r["engine"], r["dtype"]) == ("torchao", "int8") and r["model"] == "flux-dev":
            r["metrics"]["steps_per_s"] *= 0.90
    slow = _store(tmp_path / "slower.sqlite", records)
    summary = tmp_path / "summary.md"
    assert main(["--store", slow, "--baseline", last, "--summary", str(summary)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "| FAIL | flux-dev torchao:int8" in out and "steps_per_s" in out and "-10.0%" in out
    assert "REGRESSION" in summary.read_text()
    # The threshold is config: allowing 15% lets the same night pass.
    assert main(["--store", slow, "--baseline", last, "--set", "steps_per_s.relative=0.15"]) == 0


def test_noise_within_the_thresholds_passes(baseline):
    noisy = night(baseline)
    for i, r in enumerate(noisy):
        if r["status"] == "ok":
            sign = 1 if i % 2 else -1
            r["metrics"]["steps_per_s"] *= 1 + sign * 0.03
            r["metrics"]["s_per_image"] *= 1 - sign * 0.03
            r["metrics"]["peak_mem_gib"] *= 1.02
            if r["quality"]["psnr_db"] is not None:
                r["quality"]["psnr_db"] -= 0.2
    outcome = compare(noisy, baseline, load_config())
    assert outcome.regressions == [] and outcome.compared == len(baseline)


@pytest.mark.parametrize("change, metric", [
    ({("torchao", "int4"): {"peak_mem_gib": 1.10}}, "peak_mem_gib"),
    ({("torchao", "int4"): {"psnr_db": -1.0}}, "psnr_db"),
    ({("torchao", "int8"): {"lpips": 0.05}}, "lpips"),
    ({("torchao", "int8"): {"status": "error"}}, "status"),
], ids=["memory-up", "psnr-down", "lpips-up", "ok-to-error"])
def test_each_tracked_figure_can_fail(baseline, change, metric):
    records = night(baseline)
    for r in records:
        for field, value in change.get((r["engine"], r["dtype"]), {}).items():
            if r["model"] != "flux-dev":
                continue
            if field == "status":
                r["status"], r["error"] = value, {"type": "RuntimeError", "message": "CUDA error: boom"}
            elif field in ("psnr_db", "lpips"):
                r["quality"][field] += value
            else:
                r["metrics"][field] *= value
    found = compare(records, baseline, load_config()).regressions
    assert [f.metric for f in found] == [metric]


def test_missing_cells_are_notes_unless_configured(baseline):
    tonight = [r for r in night(baseline) if r["engine"] != "torchao"]
    outcome = compare(tonight, baseline, load_config())
    assert outcome.regressions == [] and sum(f.tonight == "missing" for f in outcome.findings) == 3
    strict = load_config(overrides=["fail_on_missing=true"])
    assert len(compare(tonight, baseline, strict).regressions) == 3


def test_faster_cells_and_fixed_failures_are_improvements(baseline):
    records = night(baseline)
    for r in records:
        if r["engine"] == "bnb":
            r["status"], r["error"], r["metrics"]["steps_per_s"] = "ok", None, 1.0
        if r["engine"] == "bf16":
            r["metrics"]["steps_per_s"] *= 1.2
    outcome = compare(records, baseline, load_config())
    assert not outcome.regressions
    assert {(f.metric, f.kind) for f in outcome.findings} >= {("status", "improvement"), ("steps_per_s", "improvement")}


def test_no_baseline_passes_with_a_note_unless_required(tmp_path, baseline, capsys):
    now = _store(tmp_path / "now.sqlite", baseline)
    assert main(["--store", now, "--baseline", str(tmp_path / "none.sqlite")]) == 0
    assert "no baseline" in capsys.readouterr().out
    assert main(["--store", now, "--baseline", str(tmp_path / "none.sqlite"), "--require-baseline"]) == 2


def test_bad_arguments_exit_2(tmp_path, baseline):
    now = _store(tmp_path / "now.sqlite", baseline)
    assert main(["--store", now, "--baseline", now, "--set", "steps_per_s.fast=1"]) == 2
    assert main(["--store", str(tmp_path / "missing.sqlite"), "--baseline", now]) == 2


def test_missing_store_is_one_line_and_exit_2(tmp_path, baseline, capsys):
    now = _store(tmp_path / "now.sqlite", baseline)
    assert main(["--store", str(tmp_path / "missing.sqlite"), "--baseline", now]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no result store at {tmp_path / 'missing.sqlite'} (run a cell first, or pass --store)\n"


def test_tracked_figures_are_read_where_the_record_keeps_them():
    assert regression.figure({"quality": {"psnr_db": 30.0}, "metrics": {"psnr_db": 1.0}}, "psnr_db") == 30.0
    assert regression.figure({"metrics": {"steps_per_s": 2.5}}, "steps_per_s") == 2.5
    assert regression.figure({"metrics": {"load_s": 4.0}}, "load_s") == 4.0   # tracked, but not a table column
    assert regression.figure({"metrics": {"steps_per_s": True}}, "steps_per_s") is None


def test_config_file_matches_the_builtin_defaults():
    assert load_config(regression.DEFAULT_CONFIG) == regression.BUILTIN


def test_nightly_script_reports_checks_and_promotes(tmp_path, baseline):
    """scripts/nightly.sh glue without a GPU: report, check (fails on the slowdown), promote, check again."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "nightly.sh"
    last = _store(tmp_path / "last.sqlite", baseline)
    records = night(baseline)
    for r in records:
        if r["status"] == "ok":
            r["metrics"]["steps_per_s"] *= 0.9
    tonight = _store(tmp_path / "tonight.sqlite", records)
    env = {**os.environ, "HARNESS_STORE": tonight, "NIGHTLY_OUT": str(tmp_path / "out"), "NIGHTLY_BASELINE": last,
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}

    def run(step):
        return subprocess.run(["bash", str(script), step], env=env, capture_output=True, text=True, timeout=120)

    assert run("report").returncode == 0
    assert (tmp_path / "out" / "reports" / "index.html").is_file()
    check = run("check")
    assert check.returncode == 1 and "REGRESSION" in check.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "Nightly leaderboard" in summary and "## flux-dev on NVIDIA H200" in summary and "REGRESSION" in summary
    assert run("promote").returncode == 0
    assert run("check").returncode == 0  # tonight is now the baseline


def test_nightly_script_uses_the_one_entry_point():
    text = (Path(__file__).resolve().parents[2] / "scripts" / "nightly.sh").read_text()
    assert "PYTHON=${PYTHON:-python3}" in text
    assert '-m reports all --store' in text and '-m reports regression --store' in text
    assert "-m reports." not in text  # no module entry points of its own


def _noisy_night(baseline, rng, day, factor=1.0, noise=0.08, calls=6, with_spread=True):
    """One night of a fabricated history: each ok cell's timed calls scatter uniformly by +-noise around its
    true speed (times ``factor``); the record keeps their medians and, with_spread, their spread."""
    import statistics

    from harness.measure import spread

    out = night(baseline)
    for r in out:
        r["created"] = f"2026-12-{day:02d}T00:00:00"
        if r["status"] != "ok":
            continue
        speeds = [r["metrics"]["steps_per_s"] * factor * (1 + rng.uniform(-noise, noise)) for _ in range(calls)]
        times = [28 / s for s in speeds]
        r["metrics"]["steps_per_s"], r["metrics"]["s_per_image"] = statistics.median(speeds), statistics.median(times)
        if with_spread:
            r["metrics"]["spread"] = {"steps_per_s": spread(speeds), "s_per_image": spread(times)}
    return out


def test_noise_the_nights_measured_is_not_a_regression_a_real_slowdown_is(baseline):
    import random

    rng = random.Random(16)
    config = load_config()
    history = [_noisy_night(baseline, random.Random(16 + day), day) for day in range(1, 11)]
    bare = [_noisy_night(baseline, random.Random(16 + day), day, with_spread=False) for day in range(1, 11)]
    # Ten noisy nights of unchanged cells (+-8% per call, 5% thresholds): nothing regresses once the spread is
    # known, while the same medians without their spread trip the 5% threshold.
    flagged = [compare(b, a, config).regressions for a, b in zip(history, history[1:])]
    assert all(found == [] for found in flagged)
    assert any(compare(b, a, config).regressions for a, b in zip(bare, bare[1:]))
    notes = [f for a, b in zip(history, history[1:]) for f in compare(b, a, config).findings
             if f.kind == "note" and "within the nights' spread" in f.detail]
    assert notes  # changes beyond the threshold but within the spread are still reported
    # A 30% slowdown is beyond any night's spread: every ok cell's speed and latency regress.
    slow = _noisy_night(baseline, rng, 12, factor=0.7)
    found = compare(slow, history[-1], config).regressions
    ok_cells = sum(r["status"] == "ok" for r in baseline)
    assert {f.metric for f in found} == {"steps_per_s", "s_per_image"} and len(found) == 2 * ok_cells
    assert all("spread" in f.detail for f in found)
