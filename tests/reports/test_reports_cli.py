"""``python -m reports``: each command renders its files from a store, the bare form renders everything,
an unknown command or a missing store exits 2 with one line."""
import subprocess
import sys

import pytest

from reports.cli import COMMANDS, main
from tests.reports import samples


@pytest.fixture
def store(tmp_path):
    records = samples.leaderboard(tmp_path / "runs")
    offloaded = samples.record("torchao", "int8", offload="sequential", steps_per_s=0.5, peak=8.0)
    offloaded["env"]["gpu_cap_gib"] = 16.0
    return samples.store(tmp_path / "r.sqlite", records + [offloaded])


def _python(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "reports", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command, files", [
    ("leaderboard", ["leaderboard.md", "leaderboard.csv"]),
    ("matrix", ["matrix.md", "matrix.csv"]),
    ("offload", ["offload.md", "offload.csv"]),
    ("lora", ["lora.md", "lora.csv"]),
    ("html", ["index.html"]),
])
def test_each_command_writes_its_files_and_only_those(tmp_path, store, capsys, command, files):
    out = tmp_path / "out"
    args = [command, "--store", store, "--out", str(out)] + (["--no-images"] if command == "html" else [])
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert all((out / name).stat().st_size > 0 for name in files)
    printed = capsys.readouterr().out
    assert all(name in printed for name in files)


def test_html_command_writes_grids_and_plots(tmp_path, store):
    assert main(["html", "--store", store, "--out", str(tmp_path / "out"), "--tile", "64"]) == 0
    assert len(list((tmp_path / "out" / "grids").glob("*.png"))) == 4
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 6


def test_reports_command_writes_every_report(tmp_path, capsys):
    location = samples.store(tmp_path / "r.sqlite", samples.leaderboard(tmp_path / "runs"))
    assert main(["--store", location, "--out", str(tmp_path / "out"), "--tile", "64"]) == 0
    out = tmp_path / "out"
    for name in ("leaderboard.md", "leaderboard.csv", "index.html"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "grids").glob("*.png"))) == 4 and len(list((out / "plots").glob("*.png"))) == 6
    assert "html: " in capsys.readouterr().out
    assert not (out / "offload.md").exists() and not (out / "lora.md").exists()  # no such cell in the store


def test_all_is_the_bare_command_and_adds_the_offload_table_when_offloaded(tmp_path, store):
    bare, named = tmp_path / "bare", tmp_path / "named"
    assert main(["--store", store, "--out", str(bare), "--no-images"]) == 0
    assert main(["all", "--store", store, "--out", str(named), "--no-images"]) == 0
    names = sorted(p.name for p in bare.iterdir())
    assert names == sorted(p.name for p in named.iterdir())
    assert names == ["index.html", "leaderboard.csv", "leaderboard.md", "matrix.csv", "matrix.md",
                     "offload.csv", "offload.md"]


def test_the_page_does_not_print_the_stores_folders(tmp_path, store):
    assert main(["html", "--store", store, "--out", str(tmp_path / "out"), "--no-images"]) == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert " from r.sqlite;" in page and str(tmp_path) not in page


def test_the_store_defaults_to_harness_store(tmp_path, store, monkeypatch):
    monkeypatch.setenv("HARNESS_STORE", store)
    assert main(["leaderboard", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "leaderboard.md").is_file()


def test_reports_command_without_a_store_exits_2(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path)]) == 2
    assert "no result store" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["all", "leaderboard", "matrix", "offload", "html"])
def test_a_missing_store_is_one_line_without_a_traceback(tmp_path, command):
    missing = tmp_path / "missing.sqlite"
    proc = _python(command, "--store", str(missing), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr == f"error: no result store at {missing} (run a cell first, or pass --store)\n"
    assert not missing.exists() and not (tmp_path / "out").exists()  # nothing created


def test_an_unknown_command_exits_2_with_the_valid_names(tmp_path):
    proc = _python("leaderbord", "--store", str(tmp_path / "r.sqlite"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and not proc.stdout
    assert "unknown command 'leaderbord'. Did you mean: leaderboard?" in proc.stderr
    assert "Commands: " + ", ".join(COMMANDS) in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["leaderboard", "--bogus"], "unrecognized arguments: --bogus"),
    (["regression"], "the following arguments are required: --baseline"),
    (["all", "--tile", "x"], "argument --tile: invalid int value: 'x'"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
    proc = _python(*args, "--out", str(tmp_path / "out")) if args[0] != "regression" else _python(*args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stderr.startswith("error: ") and not (tmp_path / "out").exists()


def test_help_lists_every_command():
    proc = _python("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m reports [COMMAND]")
    assert all(f"\n  {name} " in proc.stdout for name in COMMANDS)


def test_harness_report_is_the_same_command(tmp_path, store):
    proc = subprocess.run([sys.executable, "-m", "harness", "report", "leaderboard", "--store", store, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "leaderboard.md").is_file()


def test_a_malformed_known_issues_file_is_one_line_and_exit_2(tmp_path, store, capsys):
    bad = tmp_path / "known.yaml"
    bad.write_text("- id: x\n  engine: bnb\n")
    assert main(["matrix", "--store", store, "--out", str(tmp_path / "out"), "--known", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: known issue #1 needs engine, expect and source") and err.count("\n") == 1


def test_known_issues_from_another_file(tmp_path, store):
    known = tmp_path / "known.yaml"
    known.write_text("- id: mine\n  engine: bnb\n  expect: {status: failure}\n  source: a test\n")
    assert main(["matrix", "--store", store, "--out", str(tmp_path / "out"), "--known", str(known)]) == 0
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert "| K1 mine |" in md and "bnb-nf4-sequential" not in md


def test_a_file_that_is_no_store_and_an_out_that_is_a_file_are_one_line_exit_2(tmp_path, capsys):
    not_a_store = tmp_path / "lora.safetensors"
    not_a_store.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      not sqlite at all")
    assert main(["--store", str(not_a_store), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be read as a result store" in err[0] and str(tmp_path) not in err[0]
    a_file = tmp_path / "x.bin"
    a_file.write_text("")
    assert main(["--store", str(not_a_store), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
