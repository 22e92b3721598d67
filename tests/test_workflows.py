"""Workflow files and CI scripts, checked offline: every .github/workflows file against the GitHub workflow
schema vendored in check-jsonschema (``--builtin-schema vendor.github-workflows``: no download), the
nightly workflow's steps, and the shell scripts' syntax."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def _check_jsonschema(*files):
    pytest.importorskip("check_jsonschema")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def test_there_are_workflows():
    assert "nightly.yml" in [p.name for p in WORKFLOWS], WORKFLOWS


def test_workflows_match_the_github_schema():
    proc = _check_jsonschema(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - run: echo hi\n    timeout-minutes: soon\n")
    proc = _check_jsonschema(broken)
    assert proc.returncode != 0 and "broken.yml" in proc.stdout + proc.stderr


def test_nightly_workflow_runs_the_nightly_script_on_a_gpu_runner():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    job = flow["jobs"]["nightly"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    runs = [s.get("run", "") for s in job["steps"]]
    order = [next(i for i, r in enumerate(runs) if f"scripts/nightly.sh {step}" in r)
             for step in ("install", "sweep", "report", "check", "promote")]
    assert order == sorted(order)
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "reports" in upload["with"]["path"] and "cancelled" in upload["if"]
    promote = job["steps"][order[-1]]
    assert "success()" in promote["if"]  # a regression is not promoted to baseline unless accepted


SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh"))


def test_the_ci_scripts_are_there():
    assert {"scripts/nightly.sh", "scripts/ci_services.sh"} <= set(SCRIPTS), SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_parse(script):
    bash = shutil.which("bash")
    proc = subprocess.run([bash, "-n", str(ROOT / script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# A command word `python` or `python3` (not a comment, not part of a longer name, not $PYTHON's default).
BARE_PYTHON = re.compile(r"(?<![\w./$])python3?(?![\w.-])")


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_run_the_interpreter_in_python_env(script):
    """Each script runs "$PYTHON" (default python3), so that the tests, CI and the nightly run pick the
    interpreter that runs them, whichever `python` is first on PATH."""
    bare = []
    for n, line in enumerate((ROOT / script).read_text().splitlines(), 1):
        code = line.split(" #", 1)[0].replace("${PYTHON:-python3}", "")
        if not code.lstrip().startswith("#") and BARE_PYTHON.search(code):
            bare.append(f"{script}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)
