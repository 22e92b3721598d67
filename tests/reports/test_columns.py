"""Every column the reports show reads a path that exists in harness.record's dataclasses."""
import pytest

from harness.record import schema_rows
from reports import columns

#: Every documented record key, nested ones as ``metrics.load_s``.
SCHEMA = {key for key, _ in schema_rows()}


def path_exists(path: str) -> bool:
    """Whether ``path`` is a documented record key; below a field with no documented keys of its own (the
    plain dicts ``env``, ``config``, ``offload_report``) any key is accepted."""
    if path in SCHEMA:
        return True
    head = path.split(".", 1)[0]
    return head in SCHEMA and not any(key.startswith(head + ".") for key in SCHEMA)


@pytest.mark.parametrize("column", columns.FRAME, ids=lambda c: c.key)
def test_column_paths_exist_in_the_record_schema(column):
    assert path_exists(column.path), column.path


def test_the_check_rejects_a_wrong_path():
    assert not path_exists("metrics.steps_per_sec") and not path_exists("quality.steps_per_s")
    assert path_exists("metrics.steps_per_s") and path_exists("env.device_name")


def test_table_columns_are_in_the_frame_and_numbers_have_a_format():
    assert all(columns.BY_KEY[c.key] is c for c in columns.TABLE)
    assert {c.key for c in columns.TABLE if not c.numeric} == {"engine", "dtype", "mode", "offload", "compile",
                                                                "lora", "status", "vs_floor"}


def test_tracked_regression_figures_resolve_to_schema_paths():
    from reports.regression import BUILTIN

    for name in BUILTIN["metrics"]:
        assert path_exists(columns.figure_path(name)), name
    assert columns.figure_path("psnr_db") == "quality.psnr_db"
    assert columns.figure_path("harness_overhead_s") == "metrics.harness_overhead_s"


def test_lookup_and_derived_columns():
    record = {"metrics": {"steps_per_s": 2.0}, "env": None, "workload": {"width": 64, "height": 48}}
    assert columns.lookup(record, "metrics.steps_per_s") == 2.0
    assert columns.lookup(record, "env.device_name") is None and columns.lookup(record, "quality.ssim") is None
    assert columns.BY_KEY["device_name"].get(record) == "unknown"
    assert columns.BY_KEY["resolution"].get(record) == "64x48"
